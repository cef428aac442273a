//! The prover side of the log's Merkle tree (RFC 9162): roots, inclusion proofs and
//! consistency proofs for any tree size up to the current one.
//!
//! The tree keeps the hash of every complete, aligned subtree (level 0: leaves; level `i`: the
//! roots of aligned runs of `2^i` leaves), about two hashes per leaf. Any subtree root is then a
//! lookup or O(log n) hashes, and a proof O(log² n) hashes at worst. The hash functions and the
//! verifier are the domain's (`tellonce_domain::merkle`).

use tellonce_domain::merkle::{empty_root, node_hash, Hash};

/// Why a proof cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A size or index beyond the tree.
    #[error("the tree has {len} leaves; {what}")]
    OutOfRange {
        /// Leaves in the tree now.
        len: u64,
        /// What was asked.
        what: String,
    },
}

/// A Merkle tree that grows one leaf at a time.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

fn split(n: u64) -> u64 {
    // The largest power of two smaller than n (n >= 2).
    1u64 << (63 - (n - 1).leading_zeros())
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        MerkleTree::default()
    }

    /// Leaves in the tree.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, MerkleError> {
        self.levels
            .first()
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or(MerkleError::OutOfRange {
                len: self.len(),
                what: format!("no leaf {index}"),
            })
    }

    /// Adds a leaf hash (see `tellonce_domain::merkle::leaf_hash`).
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let l = &self.levels[level];
            let parent = node_hash(&l[l.len() - 2], &l[l.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// MTH of leaves `[a, b)`, where the range is one the RFC's recursion visits.
    fn mth(&self, a: u64, b: u64) -> Hash {
        let n = b - a;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && a.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(a >> level) as usize];
        }
        let k = split(n);
        node_hash(&self.mth(a, a + k), &self.mth(a + k, b))
    }

    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        if size > self.len() {
            return Err(MerkleError::OutOfRange {
                len: self.len(),
                what: format!("no tree of size {size} yet"),
            });
        }
        Ok(())
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, MerkleError> {
        self.check_size(size)?;
        Ok(self.mth(0, size))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(size)?;
        if index >= size {
            return Err(MerkleError::OutOfRange {
                len: self.len(),
                what: format!("leaf {index} is not in a tree of size {size}"),
            });
        }
        let mut path = Vec::new();
        self.path(index, 0, size, &mut path);
        Ok(path)
    }

    fn path(&self, m: u64, a: u64, b: u64, out: &mut Vec<Hash>) {
        let n = b - a;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, a, a + k, out);
            out.push(self.mth(a + k, b));
        } else {
            self.path(m - k, a + k, b, out);
            out.push(self.mth(a, a + k));
        }
    }

    /// The consistency proof that the tree of `second` leaves extends the tree of `first`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, MerkleError> {
        self.check_size(second)?;
        if first > second {
            return Err(MerkleError::OutOfRange {
                len: self.len(),
                what: format!("size {first} is larger than size {second}"),
            });
        }
        let mut out = Vec::new();
        if first > 0 {
            self.subproof(first, 0, second, true, &mut out);
        }
        Ok(out)
    }

    fn subproof(&self, m: u64, a: u64, b: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = b - a;
        if m == n {
            if !whole {
                out.push(self.mth(a, b));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, a, a + k, whole, out);
            out.push(self.mth(a + k, b));
        } else {
            self.subproof(m - k, a + k, b, false, out);
            out.push(self.mth(a, a + k));
        }
    }
}

/// Builds a [`MerkleTree`] from entries' stored bytes on a thread of its own, so that a scan
/// (checksums, the hash chain) and the leaf hashes run on two cores. Leaves keep their order.
pub struct LeafHasher {
    batch: Vec<u8>,
    lens: Vec<u32>,
    tx: Option<std::sync::mpsc::SyncSender<(Vec<u8>, Vec<u32>)>>,
    worker: Option<std::thread::JoinHandle<MerkleTree>>,
}

/// Bytes gathered before a batch goes to the hashing thread.
const LEAF_BATCH: usize = 1 << 20;

impl LeafHasher {
    /// Starts the hashing thread.
    pub fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<u32>)>(8);
        let worker = std::thread::spawn(move || {
            let mut tree = MerkleTree::new();
            for (bytes, lens) in rx {
                let mut at = 0usize;
                for len in lens {
                    let end = at + len as usize;
                    tree.push(tellonce_domain::merkle::leaf_hash(&bytes[at..end]));
                    at = end;
                }
            }
            tree
        });
        LeafHasher {
            batch: Vec::with_capacity(LEAF_BATCH + 64 * 1024),
            lens: Vec::new(),
            tx: Some(tx),
            worker: Some(worker),
        }
    }

    /// Adds the next entry's stored bytes.
    pub fn push(&mut self, stored: &[u8]) {
        self.batch.extend_from_slice(stored);
        self.lens.push(stored.len() as u32);
        if self.batch.len() >= LEAF_BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        let bytes = std::mem::replace(&mut self.batch, Vec::with_capacity(LEAF_BATCH + 64 * 1024));
        let lens = std::mem::take(&mut self.lens);
        if let Some(tx) = &self.tx {
            // The worker only stops when the sender is dropped, so this cannot fail unless it
            // panicked, which `finish` reports.
            let _ = tx.send((bytes, lens));
        }
    }

    /// Waits for every leaf to be hashed and returns the tree; `None` if the hashing thread
    /// panicked.
    pub fn finish(mut self) -> Option<MerkleTree> {
        if !self.lens.is_empty() {
            self.send();
        }
        self.tx.take();
        self.worker.take()?.join().ok()
    }
}

impl Default for LeafHasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tellonce_domain::merkle::{leaf_hash, reference, verify_consistency, verify_inclusion};

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
            .collect()
    }

    fn tree(l: &[Hash]) -> MerkleTree {
        let mut t = MerkleTree::new();
        for h in l {
            t.push(*h);
        }
        t
    }

    #[test]
    fn matches_the_rfc_definitions_for_every_size_up_to_40() {
        let l = leaves(40);
        let t = tree(&l);
        assert_eq!(t.root(0).unwrap(), empty_root());
        for n in 1..=40usize {
            assert_eq!(
                t.root(n as u64).unwrap(),
                reference::root(&l[..n]),
                "root n={n}"
            );
            for m in 0..n {
                assert_eq!(
                    t.inclusion_proof(m as u64, n as u64).unwrap(),
                    reference::inclusion(m, &l[..n]),
                    "inclusion m={m} n={n}"
                );
            }
            for m in 0..=n {
                assert_eq!(
                    t.consistency_proof(m as u64, n as u64).unwrap(),
                    reference::consistency(m, &l[..n]),
                    "consistency m={m} n={n}"
                );
            }
        }
    }

    #[test]
    fn asks_beyond_the_tree_are_errors() {
        let t = tree(&leaves(5));
        assert!(t.root(6).is_err());
        assert!(t.inclusion_proof(5, 5).is_err());
        assert!(t.inclusion_proof(0, 6).is_err());
        assert!(t.consistency_proof(4, 6).is_err());
        assert!(t.consistency_proof(5, 4).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Proofs made by the tree verify with the domain's independent verifier.
        #[test]
        fn proofs_verify(n in 1u64..5000, a in any::<u64>(), b in any::<u64>()) {
            let l = leaves(n as usize);
            let t = tree(&l);
            let size = 1 + a % n;
            let index = b % size;
            let root = t.root(size).unwrap();
            let path = t.inclusion_proof(index, size).unwrap();
            prop_assert_eq!(verify_inclusion(&l[index as usize], index, size, &path, &root), Ok(()));
            let first = b % (size + 1);
            let proof = t.consistency_proof(first, size).unwrap();
            prop_assert_eq!(verify_consistency(first, size, &t.root(first).unwrap(), &root, &proof), Ok(()));
        }
    }

    #[test]
    fn the_leaf_hasher_builds_the_same_tree() {
        let mut direct = MerkleTree::new();
        let mut hasher = LeafHasher::new();
        for i in 0..5_000u32 {
            let bytes: Vec<u8> = (0..(i % 700)).map(|b| (b ^ i) as u8).collect();
            direct.push(tellonce_domain::merkle::leaf_hash(&bytes));
            hasher.push(&bytes);
        }
        let tree = hasher.finish().expect("tree");
        assert_eq!(tree.len(), direct.len());
        assert_eq!(tree.root(5_000).unwrap(), direct.root(5_000).unwrap());
        assert_eq!(tree.root(1_234).unwrap(), direct.root(1_234).unwrap());
    }
}
