//! Damaged data: a store whose files or records are damaged stops Herald's start with an
//! error that names what is damaged and the way out; Herald never starts on partial data.
//!
//! The damaged stores are made here, from a healthy one, rather than kept as files: a store
//! directory holds 64 MiB preallocated journal files (see `store/fjall.rs`).

// A test harness: a failed file operation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Raw, drain};
use herald::store::fjall::{FjallOptions, FjallStore};
use herald::store::record::{self, MessageRecord};
use herald::store::{Fsync, Op, Space, Store};
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, QoS};

fn config(dir: &Path) -> herald::config::Config {
    let mut c = common::config();
    c.store.in_memory = false;
    c.store.data_dir = dir.to_path_buf();
    c.store.min_free_disk_bytes = 0;
    // Small tables: the messages below are flushed into sorted files.
    c.store.memtable_bytes = 64 * 1024;
    c
}

/// A healthy store: a persistent session with `n` queued messages and a retained message.
async fn healthy(dir: &Path, n: usize) {
    let s = common::start_with(config(dir)).await;
    let mut connect = Connect::new(V5, "keeper", 60);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(u32::MAX);
    let (mut c, _) = Raw::connect_with(s.addr, connect).await;
    c.subscribe("d/#", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publisher = Raw::connect(s.addr, V5, "publisher").await;
    let payload = vec![b'x'; 512];
    for i in 0..n {
        publisher
            .publish(&format!("d/{i}"), &payload, QoS::AtLeastOnce, i == 0)
            .await;
    }
    s.server.shutdown(Duration::from_secs(5)).await;
}

fn open(dir: &Path) -> FjallStore {
    FjallStore::open(
        dir,
        &FjallOptions {
            memtable_bytes: 64 * 1024,
            max_journal_bytes: 64 << 20,
            fsync: Fsync::Batch,
        },
    )
    .expect("the healthy store opens")
}

/// The error Herald's start gives on `dir`.
async fn start_error(dir: &Path) -> String {
    match herald::server::Server::start(config(dir)).await {
        Ok(_) => panic!("Herald started on a damaged store"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_names_the_way_out(e: &str) {
    for part in [
        "keep a copy",
        "restore a backup",
        "--data-dir",
        "--in-memory",
    ] {
        assert!(
            e.to_lowercase().contains(&part.to_lowercase()),
            "{part:?} in {e}"
        );
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The sorted table files of the messages keyspace (fjall names table files by number).
fn message_tables(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    files
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let in_tables = p.components().any(|c| c.as_os_str() == "tables");
            in_tables
                && name.chars().all(|c| c.is_ascii_digit())
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 4096)
        })
        .collect()
}

#[tokio::test]
async fn a_healthy_store_starts_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path(), 300).await;
    let s = common::start_with(config(dir.path())).await;
    let mut connect = Connect::new(V5, "keeper", 60);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(u32::MAX);
    let (mut c, ack) = Raw::connect_with(s.addr, connect).await;
    assert!(ack.session_present);
    assert_eq!(drain(&mut c, 300).await.len(), 300);
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_named() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path(), 10).await;
    {
        // Cut one stored message short, as a torn write inside a value would.
        let store = open(dir.path());
        let mut first = None;
        store
            .scan(Space::Messages, &mut |k, v| {
                if first.is_none() {
                    first = Some((k.to_vec(), v.to_vec()));
                }
                Ok(())
            })
            .unwrap();
        let (key, value) = first.expect("a stored message");
        assert!(MessageRecord::decode(&value).is_ok());
        let cut = value[..value.len() / 2].to_vec();
        store
            .apply(&[Op::Put(Space::Messages, key.clone(), cut)], true)
            .unwrap();
        let e = {
            drop(store);
            start_error(dir.path()).await
        };
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(e.contains("messages keyspace") && e.contains(&hex), "{e}");
        assert_names_the_way_out(&e);
    }
    {
        // A session record with an unknown format byte.
        let store = open(dir.path());
        store
            .apply(
                &[Op::Put(Space::Sessions, record::session_key(7), vec![9, 9])],
                true,
            )
            .unwrap();
        drop(store);
        let e = start_error(dir.path()).await;
        assert!(e.contains("sessions keyspace"), "{e}");
        assert!(e.contains("format"), "{e}");
    }
}

/// Damages the middle of every messages table with `damage`, then expects the start to fail
/// naming the directory.
async fn damaged_tables(damage: fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path(), 1500).await;
    let tables = message_tables(dir.path());
    assert!(!tables.is_empty(), "the messages were flushed to tables");
    for table in &tables {
        damage(table);
    }
    let e = start_error(dir.path()).await;
    assert!(
        e.contains(&dir.path().display().to_string()),
        "names the directory: {e}"
    );
    assert_names_the_way_out(&e);
}

#[tokio::test]
async fn a_corrupted_table_file_stops_the_start() {
    damaged_tables(|table| {
        let mut bytes = std::fs::read(table).unwrap();
        let mid = bytes.len() / 3;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0x5A;
        }
        std::fs::write(table, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_truncated_table_file_stops_the_start() {
    damaged_tables(|table| {
        let len = std::fs::metadata(table).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(table).unwrap();
        f.set_len(len / 2).unwrap();
    })
    .await;
}
