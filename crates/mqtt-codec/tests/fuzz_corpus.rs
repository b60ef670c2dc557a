//! Replays the fuzzers' seed corpus (`fuzz/corpus/<target>/seed-*`) and every crash they
//! found (`fuzz/regressions/<target>/*`) through the very checks the fuzz targets run
//! (`fuzz/src/lib.rs`, included below), so that they are part of the ordinary test suite and
//! need neither cargo-fuzz nor a nightly toolchain.
//!
//! The directory names the target, and the target the protocol version: `decode_v5`,
//! `decode_v311`, `decode_v31`.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use mqtt_codec::ProtocolVersion;

#[allow(
    unreachable_pub,
    reason = "the fuzz crate's public API, private to this test crate"
)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

/// Every fuzz target, with the version it decodes as.
const TARGETS: [(&str, ProtocolVersion); 3] = [
    ("decode_v5", ProtocolVersion::V5),
    ("decode_v311", ProtocolVersion::V3_1_1),
    ("decode_v31", ProtocolVersion::V3_1),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn version_of(target: &str) -> ProtocolVersion {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, version)| *version)
        .unwrap_or_else(|| panic!("no fuzz target named {target:?}: which version is it?"))
}

/// The files of `dir` whose names start with `prefix`, sorted.
fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(prefix))
        })
        .collect();
    files.sort();
    files
}

/// Runs every file through the fuzz target's checks for `version`, and fails listing every
/// file that panicked. Returns how many packets each file decoded.
fn replay(version: ProtocolVersion, files: &[PathBuf]) -> Vec<(PathBuf, usize)> {
    let mut decoded = Vec::new();
    let mut failures = Vec::new();
    for path in files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| harness::decode_stream(version, &data))) {
            Ok(packets) => decoded.push((path.clone(), packets.len())),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{}: {message}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    decoded
}

#[test]
fn seed_corpus_replays() {
    for (target, version) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        assert!(dir.is_dir(), "the seed corpus {} is missing", dir.display());
        let seeds = files(&dir, "seed-");
        assert!(
            !seeds.is_empty(),
            "the seed corpus {} has no seed-* file",
            dir.display()
        );
        for (path, packets) in replay(version, &seeds) {
            // Seeds are valid packets; those whose first byte sets no size limit must decode.
            let unlimited = fs::read(&path).unwrap()[0] < 0x80;
            assert!(
                !unlimited || packets > 0,
                "seed {} decodes no packet",
                path.display()
            );
        }
    }
}

#[test]
fn crash_regressions_replay() {
    let root = fuzz_dir().join("regressions");
    assert!(root.is_dir(), "{} is missing", root.display());
    let mut replayed = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let target = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let version = version_of(&target);
        let inputs = files(&dir, "");
        replayed += replay(version, &inputs).len();
    }
    assert!(replayed > 0, "no crash regression under {}", root.display());
}
