//! Nothing is left behind: a run that uses no GPU adapter creates no runtime folder (also
//! `--help` and argument errors, which end inside the argument parser); a SIGTERM during the
//! final write removes the temporaries; temporaries left by killed runs are swept by the next
//! write of the same file.

mod common;

use std::path::Path;
use std::process::Command;

use common::files::{command, copy_fixture, mkfifo, scratch};

/// The entries of `dir` whose names contain `part`.
fn entries_with(dir: &Path, part: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect()
}

#[test]
fn runs_without_a_gpu_leave_no_runtime_folder() {
    let tmp = scratch("runtime-tmp");
    let dir = scratch("runtime-cwd");
    let model = common::fixture("mnist_cnn.onnx");
    let runs: &[&[&str]] = &[
        &["--help"],
        &["prune", "--help"],
        &["--no-such-option"],
        &["prune", "m.onnx"],
        &["info", model.to_str().unwrap()],
        // Looks for adapters (the folder is made), then removes it at exit.
        &["devices"],
    ];
    for args in runs {
        let out = command()
            .current_dir(&dir)
            .env("TMPDIR", &tmp)
            .env_remove("XDG_RUNTIME_DIR")
            .args(*args)
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{args:?}"
        );
        let left = entries_with(&tmp, "subprune-runtime-");
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

#[test]
fn sigterm_during_the_final_write_removes_the_temporaries() {
    let dir = scratch("sigterm");
    copy_fixture("mnist_cnn.onnx", &dir);
    copy_fixture("mnist_calib_512.npy", &dir);
    let fifo = dir.join("hold");
    mkfifo(&fifo);
    let mut child = command()
        .current_dir(&dir)
        .env("SUBPRUNE_TEST_HOLD_BEFORE_RENAME", &fifo)
        .args(["prune", "mnist_cnn.onnx", "--calib", "mnist_calib_512.npy"])
        .args(["--calib-images", "64", "--out", "o.onnx"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The FIFO is opened by the run once its temporaries are written (it then waits for the
    // FIFO's end), or by the watcher if the run ends without doing so.
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher_fifo = fifo.clone();
    std::thread::spawn(move || {
        let status = child.wait().unwrap();
        tx.send(status).unwrap();
        let _ = std::fs::File::open(watcher_fifo);
    });
    let hold = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    if let Ok(status) = rx.try_recv() {
        panic!("the run ended ({status}) without stopping before its final rename");
    }
    assert_eq!(entries_with(&dir, ".o.onnx.tmp").len(), 1, "no temporary");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = rx.recv().unwrap();
    drop(hold);
    assert_eq!(status.code(), Some(128 + 15), "{status}");
    assert!(entries_with(&dir, ".tmp").is_empty(), "temporaries left");
    assert!(!dir.join("o.onnx").exists());
}

#[test]
fn stale_temporaries_of_killed_runs_are_swept() {
    let dir = scratch("stale");
    // No process has this id (above Linux's largest, 2^22); process 1 is always alive.
    let dead = dir.join(".o.onnx.tmp999999999");
    let alive = dir.join(".o.onnx.tmp1");
    let other = dir.join(".other.onnx.tmp999999999");
    for f in [&dead, &alive, &other] {
        std::fs::write(f, b"partial").unwrap();
    }
    let model = subprune::onnx::load(common::fixture("mnist_cnn.onnx")).unwrap();
    subprune::onnx::save(&model, dir.join("o.onnx"), &Default::default()).unwrap();
    assert!(!dead.exists(), "a stale temporary of o.onnx was kept");
    assert!(other.exists(), "another file's temporary was removed");
    assert!(alive.exists(), "a live run's temporary was removed");
    assert!(dir.join("o.onnx").exists());
}
