//! Verifying Merkle proofs over the log, in the manner of RFC 9162 (Certificate Transparency).
//!
//! The log's Merkle tree has one leaf per entry; a leaf's hash is `SHA-256(0x00 || bytes)` over
//! the entry's stored bytes and an interior node's is `SHA-256(0x01 || left || right)`. The tree
//! over `n` leaves splits at the largest power of two smaller than `n`. This module is the small,
//! independent verifier that auditors (and tests) use: it checks an inclusion proof ("this entry
//! is in the log of this size") and a consistency proof ("the log of size `second` extends the
//! log of size `first` without rewriting anything") with the algorithms of RFC 9162 §2.1.3.2 and
//! §2.1.4.2. The prover lives with the log; the two share nothing but these hash functions.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256()` of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index claimed.
        index: u64,
        /// The tree size claimed.
        size: u64,
    },
    /// The sizes are impossible (the first tree larger than the second).
    #[error("a tree of size {first} cannot be extended by one of size {second}")]
    BadSizes {
        /// The older size.
        first: u64,
        /// The newer size.
        second: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has the wrong length for these tree sizes")]
    WrongLength,
    /// The hashes do not lead to the expected root(s).
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// Verifies that the leaf with hash `leaf` is at `index` in the tree of `size` leaves whose root
/// is `root`, given the inclusion `path` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `second` leaves with root `second_root` extends the tree of
/// `first` leaves with root `first_root`, given the consistency `proof` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots; every tree extends the empty tree (size 0)
/// with an empty proof.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::BadSizes { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if first == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != first_root || &sr != second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The definitions of RFC 6962 §2.1 written literally (recursive, slow): the reference the
/// prover and the verifier are tested against.
pub mod reference {
    use super::{empty_root, node_hash, Hash};

    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]) over leaf hashes.
    pub fn root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    pub fn inclusion(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = inclusion(m, &leaves[..k]);
            p.push(root(&leaves[k..]));
            p
        } else {
            let mut p = inclusion(m - k, &leaves[k..]);
            p.push(root(&leaves[..k]));
            p
        }
    }

    fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { Vec::new() } else { vec![root(leaves)] };
        }
        let k = split(n);
        if m <= k {
            let mut p = subproof(m, &leaves[..k], b);
            p.push(root(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(root(&leaves[..k]));
            p
        }
    }

    /// PROOF(m, D[n]), for 0 < m <= n.
    pub fn consistency(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        if m == 0 {
            return Vec::new();
        }
        subproof(m, leaves, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn known_roots() {
        // The empty tree and a one-leaf tree, as RFC 9162 defines them.
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(reference::root(&[leaf_hash(b"")]), leaf_hash(b""));
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn every_inclusion_proof_up_to_64_leaves_verifies_and_only_where_it_should() {
        for n in 1..=64usize {
            let l = leaves(n);
            let root = reference::root(&l);
            for m in 0..n {
                let path = reference::inclusion(m, &l);
                assert_eq!(
                    verify_inclusion(&l[m], m as u64, n as u64, &path, &root),
                    Ok(()),
                    "m={m} n={n}"
                );
                // The wrong leaf, index, size, or a cut or padded path must fail.
                let other = leaf_hash(b"not in the log");
                assert!(verify_inclusion(&other, m as u64, n as u64, &path, &root).is_err());
                if n > 1 {
                    let wrong = (m + 1) % n;
                    assert!(
                        verify_inclusion(&l[m], wrong as u64, n as u64, &path, &root).is_err(),
                        "index m={m} n={n}"
                    );
                }
                // Against the real root of a tree one leaf larger or smaller.
                let bigger = leaves(n + 1);
                let bigger_root = reference::root(&bigger);
                assert!(
                    verify_inclusion(&l[m], m as u64, n as u64 + 1, &path, &bigger_root).is_err(),
                    "size+1 m={m} n={n}"
                );
                if m < n - 1 {
                    let smaller_root = reference::root(&l[..n - 1]);
                    assert!(
                        verify_inclusion(&l[m], m as u64, n as u64 - 1, &path, &smaller_root)
                            .is_err(),
                        "size-1 m={m} n={n}"
                    );
                }
                if !path.is_empty() {
                    assert!(verify_inclusion(
                        &l[m],
                        m as u64,
                        n as u64,
                        &path[..path.len() - 1],
                        &root
                    )
                    .is_err());
                }
                let mut longer = path.clone();
                longer.push(root);
                assert!(verify_inclusion(&l[m], m as u64, n as u64, &longer, &root).is_err());
            }
            assert_eq!(
                verify_inclusion(&l[0], n as u64, n as u64, &[], &root),
                Err(ProofError::IndexOutOfRange {
                    index: n as u64,
                    size: n as u64
                })
            );
        }
    }

    #[test]
    fn single_leaf_tree_has_an_empty_proof() {
        let l = leaves(1);
        assert_eq!(verify_inclusion(&l[0], 0, 1, &[], &l[0]), Ok(()));
        assert!(verify_inclusion(&l[0], 0, 1, &[l[0]], &l[0]).is_err());
    }

    #[test]
    fn every_consistency_proof_up_to_64_leaves_verifies_and_only_where_it_should() {
        for n in 1..=64usize {
            let l = leaves(n);
            let second = reference::root(&l);
            for m in 0..=n {
                let first = reference::root(&l[..m]);
                let proof = reference::consistency(m, &l);
                assert_eq!(
                    verify_consistency(m as u64, n as u64, &first, &second, &proof),
                    Ok(()),
                    "m={m} n={n}"
                );
                if m > 0 && m < n {
                    // A rewritten history, a wrong size, or a damaged proof must fail.
                    let other_first = reference::root(&leaves(m + 1)[1..]);
                    assert!(
                        verify_consistency(m as u64, n as u64, &other_first, &second, &proof)
                            .is_err()
                    );
                    let first_plus = reference::root(&l[..m + 1]);
                    if m + 1 < n {
                        assert!(
                            verify_consistency(
                                m as u64 + 1,
                                n as u64,
                                &first_plus,
                                &second,
                                &proof
                            )
                            .is_err(),
                            "m+1 m={m} n={n}"
                        );
                    }
                    let bigger_root = reference::root(&leaves(n + 1));
                    assert!(
                        verify_consistency(m as u64, n as u64 + 1, &first, &bigger_root, &proof)
                            .is_err(),
                        "n+1 m={m} n={n}"
                    );
                    assert!(verify_consistency(
                        m as u64,
                        n as u64,
                        &first,
                        &second,
                        &proof[..proof.len() - 1]
                    )
                    .is_err());
                    let mut swapped = proof.clone();
                    if swapped.len() > 1 {
                        swapped.swap(0, 1);
                        if swapped != proof {
                            assert!(verify_consistency(
                                m as u64, n as u64, &first, &second, &swapped
                            )
                            .is_err());
                        }
                    }
                }
            }
            assert!(verify_consistency(n as u64 + 1, n as u64, &second, &second, &[]).is_err());
            assert!(
                verify_consistency(n as u64, n as u64, &second, &leaf_hash(b"x"), &[]).is_err()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_sizes_verify(n in 1usize..2000, m_seed in any::<u64>(), i_seed in any::<u64>()) {
            let l = leaves(n);
            let root = reference::root(&l);
            let i = (i_seed % n as u64) as usize;
            prop_assert_eq!(verify_inclusion(&l[i], i as u64, n as u64, &reference::inclusion(i, &l), &root), Ok(()));
            let m = (m_seed % (n as u64 + 1)) as usize;
            let first = reference::root(&l[..m]);
            prop_assert_eq!(verify_consistency(m as u64, n as u64, &first, &root, &reference::consistency(m, &l)), Ok(()));
        }
    }
}
