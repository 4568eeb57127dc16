//! `subprune bench` plans its sizes before any allocation (issue 24, item 9): a case or an image
//! count too large for the machine, or whose sizes overflow, is a clear error, never a capacity
//! overflow panic or an abort.

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_subprune"))
        .args(["bench", "--backend", "cpu", "--reps", "1"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("memory allocation"),
        "{args:?}: {stderr}"
    );
    (out.status.success(), stderr)
}

#[test]
fn a_case_whose_sizes_overflow_is_refused_naming_it() {
    let (ok, stderr) = bench(&["--case", "100000,100000,100000,100000"]);
    assert!(!ok && stderr.contains("100000 channels") && stderr.contains("overflows"));
}

#[test]
fn a_case_larger_than_memory_is_refused_before_allocating() {
    // 4096 images of 4096 × 4096 maps of 4096 channels: about 1 EiB of inputs.
    let (ok, stderr) = bench(&["--case", "4096,4096,4096,4096"]);
    assert!(!ok && stderr.contains("needs about"), "{stderr}");
}

#[test]
fn network_images_beyond_memory_or_overflowing_are_refused() {
    for images in ["100000000000", "100000000000000000"] {
        let (ok, stderr) = bench(&["--network", "resnet50", "--size", "32", "--images", images]);
        assert!(!ok && stderr.contains(images), "{stderr}");
    }
}
