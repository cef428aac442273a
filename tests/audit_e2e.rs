//! End-to-end audit: the real `tellonce` binary. An auditor fetches a signed checkpoint, the
//! log grows, and a consistency proof shows the later checkpoint extends the earlier one; an
//! inclusion proof places an entry; the log read back gives the same Merkle root; other roles
//! are refused. Proofs are checked with the domain's own verifier, signatures with the key
//! pinned from the first checkpoint, and `tellonce audit grew` does the same from the CLI.

mod common;

use std::ffi::OsStr;

use common::{Hub, AUDITOR_TOKEN, POLICE_TOKEN, TEACHER_TOKEN};
use tellonce_domain::merkle::{reference, verify_consistency, verify_inclusion};
use tellonce_proto::v1 as pb;
use tellonce_proto::v1::audit_service_client::AuditServiceClient;
use tellonce_server::audit::{parse_hash, parse_hashes, verify_checkpoint};
use tellonce_server::convert::event_to_pb;

async fn publish(hub: &Hub, from: u32, n: u32) {
    let mut c = hub.client(POLICE_TOKEN).await;
    let events = (from..from + n)
        .map(|i| {
            event_to_pb(&tellonce_domain::sample::ppn(
                "police",
                &format!("PPN-{i}"),
                u64::from(i),
                tellonce_domain::Timestamp(now_ms() - 3_600_000),
            ))
        })
        .collect();
    let r = c
        .publish(pb::PublishRequest {
            events,
            request_id: 0,
        })
        .await
        .expect("publish")
        .into_inner();
    assert!(r
        .results
        .iter()
        .all(|x| matches!(x.outcome, Some(pb::event_result::Outcome::Accepted(_)))));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn hashes(v: &[String]) -> Vec<[u8; 32]> {
    parse_hashes(v).expect("hex hashes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_prove_the_log_only_grew() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    publish(&hub, 0, 5).await;
    let mut a = AuditServiceClient::with_interceptor(
        common::channel(&hub.addr).await,
        common::bearer(AUDITOR_TOKEN),
    );
    let first = a
        .get_checkpoint(pb::GetCheckpointRequest { fresh: false })
        .await
        .expect("checkpoint")
        .into_inner();
    // Five events, and the access entry of this very call.
    assert_eq!(first.tree_size, 6);
    let pinned = first.public_key_pem.clone();
    verify_checkpoint(&first, &pinned).expect("signature");

    // Others may not audit.
    let mut t = AuditServiceClient::with_interceptor(
        common::channel(&hub.addr).await,
        common::bearer(TEACHER_TOKEN),
    );
    let denied = t
        .get_checkpoint(pb::GetCheckpointRequest { fresh: true })
        .await
        .expect_err("teachers do not audit");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // The CLI saves the checkpoint.
    let saved = tmp.path().join("checkpoint.json");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", &hub.addr, "--token", AUDITOR_TOKEN]);
        common::run_ok(all).text()
    };
    run(&[
        "audit",
        "checkpoint",
        "--out",
        saved.to_str().expect("utf-8 path"),
    ]);

    // The log grows; a fresh checkpoint extends the first one.
    publish(&hub, 5, 7).await;
    let second = a
        .get_checkpoint(pb::GetCheckpointRequest { fresh: true })
        .await
        .expect("fresh checkpoint")
        .into_inner();
    verify_checkpoint(&second, &pinned).expect("signed by the pinned key");
    assert!(second.tree_size > first.tree_size);
    let proof = a
        .prove_consistency(pb::ProveConsistencyRequest {
            first: first.tree_size,
            second: second.tree_size,
        })
        .await
        .expect("consistency proof")
        .into_inner();
    verify_consistency(
        first.tree_size,
        second.tree_size,
        &parse_hash(&first.root_hash).expect("hex"),
        &parse_hash(&second.root_hash).expect("hex"),
        &hashes(&proof.path),
    )
    .expect("the later log extends the earlier");
    // A proof against a wrong earlier root fails.
    assert!(verify_consistency(
        first.tree_size,
        second.tree_size,
        &[7; 32],
        &parse_hash(&second.root_hash).expect("hex"),
        &hashes(&proof.path),
    )
    .is_err());

    // Inclusion of the first event and of the last entry of the tree.
    for index in [0, second.tree_size - 1] {
        let inc = a
            .prove_inclusion(pb::ProveInclusionRequest {
                index,
                tree_size: second.tree_size,
            })
            .await
            .expect("inclusion proof")
            .into_inner();
        verify_inclusion(
            &parse_hash(&inc.leaf_hash).expect("hex"),
            index,
            second.tree_size,
            &hashes(&inc.path),
            &parse_hash(&second.root_hash).expect("hex"),
        )
        .expect("included");
    }

    // The log read back gives the same root, and every entry chains to the one before.
    let mut stream = a
        .read_log(pb::ReadLogRequest {
            from_offset: 0,
            limit: second.tree_size,
        })
        .await
        .expect("read log")
        .into_inner();
    let mut leaves = Vec::new();
    let mut prev = "0".repeat(64);
    while let Some(e) = stream.message().await.expect("entry") {
        assert_eq!(e.offset, leaves.len() as u64);
        assert_eq!(e.prev_hash, prev);
        prev = e.hash.clone();
        leaves.push(parse_hash(&e.leaf_hash).expect("hex"));
    }
    assert_eq!(leaves.len() as u64, second.tree_size);
    assert_eq!(
        reference::root(&leaves),
        parse_hash(&second.root_hash).expect("hex")
    );

    // The CLI proves growth from the saved checkpoint.
    publish(&hub, 12, 2).await;
    let text = run(&[
        "audit",
        "grew",
        "--since",
        saved.to_str().expect("utf-8 path"),
    ]);
    assert!(text.contains("the log only grew"), "{text}");
    // And verifies the running hub's whole log against its checkpoints.
    let text = run(&[
        "audit",
        "verify-remote",
        "--checkpoint",
        saved.to_str().expect("utf-8 path"),
    ]);
    assert!(
        text.contains("audit ok") && text.contains("is a prefix of the hub's log"),
        "{text}"
    );
    assert!(hub.stop(), "clean stop");
}

/// Runs `tellonce audit verify` on a data folder; returns (success, output).
fn audit_verify(data: &std::path::Path, saved: &std::path::Path) -> (bool, String) {
    let ran = common::run([
        OsStr::new("audit"),
        "verify".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--checkpoint".as_ref(),
        saved.as_os_str(),
    ]);
    (ran.ok, ran.text())
}

/// The byte ranges of the frames in a segment file (magic, length u32, crc, rest).
fn frames(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= data.len() {
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        out.push(pos..pos + 12 + len);
        pos += 12 + len;
    }
    out
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// The only segment file of a small log.
fn segment(data: &std::path::Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(data.join("log"))
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_each_kind_of_tampering() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path());
    publish(&hub, 0, 8).await;
    let saved = tmp.path().join("checkpoint.json");
    common::run_ok([
        OsStr::new("audit"),
        "checkpoint".as_ref(),
        "--fresh".as_ref(),
        "--out".as_ref(),
        saved.as_os_str(),
        "--addr".as_ref(),
        hub.addr.as_ref(),
        "--token".as_ref(),
        AUDITOR_TOKEN.as_ref(),
    ]);
    publish(&hub, 8, 4).await;
    assert!(hub.stop(), "clean stop");
    let data = tmp.path().join("data");

    let (ok, text) = audit_verify(&data, &saved);
    assert!(ok, "{text}");
    assert!(
        text.contains("audit ok") && text.contains("is a prefix of this log"),
        "{text}"
    );

    // Flip one byte in the body of the entry at offset 2.
    let flipped = tmp.path().join("flipped");
    copy_dir(&data, &flipped);
    let seg = segment(&flipped);
    let mut bytes = std::fs::read(&seg).expect("segment");
    let f = frames(&bytes);
    let at = f[2].end - 3;
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).expect("write");
    let (ok, text) = audit_verify(&flipped, &saved);
    assert!(
        !ok && text.contains("NOT OK") && text.contains("offset 2"),
        "{text}"
    );

    // Delete the entry at offset 3.
    let deleted = tmp.path().join("deleted");
    copy_dir(&data, &deleted);
    let seg = segment(&deleted);
    let mut bytes = std::fs::read(&seg).expect("segment");
    let f = frames(&bytes);
    bytes.drain(f[3].clone());
    std::fs::write(&seg, &bytes).expect("write");
    let (ok, text) = audit_verify(&deleted, &saved);
    assert!(!ok && text.contains("offset 3"), "{text}");

    // Swap the entries at offsets 4 and 5.
    let swapped = tmp.path().join("swapped");
    copy_dir(&data, &swapped);
    let seg = segment(&swapped);
    let bytes = std::fs::read(&seg).expect("segment");
    let f = frames(&bytes);
    let mut out = bytes[..f[4].start].to_vec();
    out.extend_from_slice(&bytes[f[5].clone()]);
    out.extend_from_slice(&bytes[f[4].clone()]);
    out.extend_from_slice(&bytes[f[5].end..]);
    std::fs::write(&seg, &out).expect("write");
    let (ok, text) = audit_verify(&swapped, &saved);
    assert!(!ok && text.contains("offset 4"), "{text}");

    // Alter a stored projection: the summary of the event at offset 1, in the line store,
    // with the index's checksum made to match (what someone covering their tracks would do).
    let altered = tmp.path().join("altered");
    copy_dir(&data, &altered);
    let lines_file = altered.join("projections").join("lines.dat");
    {
        let db = sled::open(altered.join("projections").join("db")).expect("sled");
        let mut file = std::fs::read(&lines_file).expect("lines file");
        let mut changed = false;
        for kv in db.scan_prefix(b"c") {
            let (k, v) = kv.expect("chunk");
            // The index entry: position (u64), length (u32), CRC-32C (u32), big-endian.
            let pos = u64::from_be_bytes(v[..8].try_into().expect("pos")) as usize;
            let len = u32::from_be_bytes(v[8..12].try_into().expect("len")) as usize;
            let mut lines: serde_json::Value =
                serde_json::from_slice(&file[pos..pos + len]).expect("json");
            if let Some(line) = lines
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|l| l[0] == 1))
            {
                // The stored summary is sealed; replace it with readable text (a stored line is
                // a row: the summary is its fifth value, the sealed summary its tenth).
                line[1][9] = serde_json::Value::Null;
                line[1][4] = serde_json::Value::String("nothing happened".into());
                let body = serde_json::to_vec(&lines).expect("json");
                let mut slot = (file.len() as u64).to_be_bytes().to_vec();
                slot.extend_from_slice(&(body.len() as u32).to_be_bytes());
                slot.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
                file.extend_from_slice(&body);
                db.insert(k, slot).expect("insert");
                changed = true;
                break;
            }
        }
        assert!(changed, "found the line at offset 1");
        db.flush().expect("flush");
        std::fs::write(&lines_file, &file).expect("write");
    }
    let (ok, text) = audit_verify(&altered, &saved);
    assert!(
        !ok && text.contains("projections differ") && text.contains("offset 1"),
        "{text}"
    );

    // Alter the line store's bytes alone: the hub would rebuild it, and the audit says so.
    let damaged = tmp.path().join("damaged");
    copy_dir(&data, &damaged);
    let lines_file = damaged.join("projections").join("lines.dat");
    let mut file = std::fs::read(&lines_file).expect("lines file");
    let mid = file.len() / 2;
    file[mid] ^= 0x55;
    std::fs::write(&lines_file, &file).expect("write");
    let (ok, text) = audit_verify(&damaged, &saved);
    assert!(
        !ok && text.contains("stored projections are damaged") && text.contains("checksum"),
        "{text}"
    );
}
