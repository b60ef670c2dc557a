//! Replays the fuzzers' seed corpus (`fuzz/corpus/<target>/seed-*`) and every crash they
//! found (`fuzz/regressions/<target>/*`) through the very checks the fuzz targets run
//! (`fuzz/src/lib.rs`, included below), so that they are part of the ordinary test suite and
//! need neither cargo-fuzz nor a nightly toolchain.
//!
//! The directory names the target: `ws_frames`, `ws_upgrade`, `proxy_header`, `acl_file`,
//! `jwt`, `passwd_file`, `tenants_file`, `cluster_message`. A seed's name says what the decoder must make of it: `seed-ok-*`
//! accepted, `seed-partial-*` incomplete, `seed-bad-*` refused.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[allow(
    unreachable_pub,
    reason = "the fuzz crate's public API, private to this test crate"
)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

use harness::Verdict;

/// A fuzz target's checks: they panic on a broken invariant, else say what the decoder made of
/// the input.
type Checks = fn(&[u8]) -> Verdict;

/// Every fuzz target, with the checks it runs.
const TARGETS: [(&str, Checks); 8] = [
    ("ws_frames", harness::ws_frames),
    ("ws_upgrade", harness::ws_upgrade),
    ("proxy_header", harness::proxy_header),
    ("acl_file", harness::acl_file),
    ("jwt", harness::jwt),
    ("passwd_file", harness::passwd_file),
    ("tenants_file", harness::tenants_file),
    ("cluster_message", harness::cluster_message),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn checks_of(target: &str) -> Checks {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, checks)| *checks)
        .unwrap_or_else(|| panic!("no fuzz target named {target:?}"))
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

/// Runs every file through `checks`: each file's verdict, and a line for each file that
/// panicked.
fn replay(checks: Checks, files: &[PathBuf]) -> (Vec<(PathBuf, Verdict)>, Vec<String>) {
    let mut verdicts = Vec::new();
    let mut failures = Vec::new();
    for path in files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| checks(&data))) {
            Ok(verdict) => verdicts.push((path.clone(), verdict)),
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
    (verdicts, failures)
}

/// Fails listing every input that panicked, out of `total`.
fn assert_no_failure(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What a seed's name says the decoder makes of it.
fn expected_verdict(seed: &Path) -> Verdict {
    let name = seed.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.strip_prefix("seed-").and_then(|n| n.split('-').next()) {
        Some("ok") => Verdict::Accepted,
        Some("partial") => Verdict::Incomplete,
        Some("bad") => Verdict::Refused,
        _ => panic!("seed {name:?} is not named seed-ok-*, seed-partial-* or seed-bad-*"),
    }
}

#[test]
fn seed_corpus_replays() {
    for (target, checks) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        assert!(dir.is_dir(), "the seed corpus {} is missing", dir.display());
        let seeds = files(&dir, "seed-");
        assert!(
            !seeds.is_empty(),
            "the seed corpus {} has no seed-* file",
            dir.display()
        );
        let (verdicts, failures) = replay(checks, &seeds);
        assert_no_failure(&failures, seeds.len());
        for (path, verdict) in verdicts {
            assert_eq!(verdict, expected_verdict(&path), "{}", path.display());
        }
    }
}

/// Crash inputs are kept under `fuzz/regressions/<target>/` once found; until the first one,
/// the directory may be absent.
#[test]
fn crash_regressions_replay() {
    let root = fuzz_dir().join("regressions");
    let Ok(dirs) = fs::read_dir(&root) else {
        return;
    };
    let (mut total, mut failures) = (0, Vec::new());
    for entry in dirs {
        let dir = entry.expect("directory entry").path();
        let target = dir
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_owned();
        let inputs = files(&dir, "");
        total += inputs.len();
        failures.extend(replay(checks_of(&target), &inputs).1);
    }
    assert_no_failure(&failures, total);
}
