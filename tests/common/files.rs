//! What the tests of files, paths and outputs share: a fresh folder per test, the binary as a
//! `Command` with a private cache folder, and the checks of a refusal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An empty folder of its own for the test `tag`, under cargo's temporary folder for tests.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("files-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `subprune` binary on the CPU backend, its tile cache in a folder of the tests.
pub fn command() -> Command {
    let mut cmd = Command::new(super::bin());
    cmd.env("SUBPRUNE_CACHE_DIR", env!("CARGO_TARGET_TMPDIR"))
        .args(["--backend", "cpu"]);
    cmd
}

/// Asserts the run failed with a message holding every one of `needles`; returns its stderr.
pub fn refused(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure; stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "message lacks '{n}':\n{err}");
    }
    assert!(!err.contains("panicked"), "a panic:\n{err}");
    err
}

/// Asserts the run succeeded; returns its stderr.
pub fn succeeded(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "expected success; stderr:\n{err}");
    err
}

/// A copy of a fixture in `dir`, to be written over safely if a check fails.
pub fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(super::fixture(name), &to).unwrap();
    to
}

/// `path` made a FIFO (Linux).
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs `cmd` to its end, or kills it after `limit_s` seconds and fails the test: a guard
/// against a run that blocks (a FIFO read), not a timing.
pub fn output_within(cmd: &mut Command, limit_s: u64) -> Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(std::time::Duration::from_secs(limit_s)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd:?} still ran after {limit_s} s (blocked?); killed");
        }
    }
}
