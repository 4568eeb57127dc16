//! `subprune bench` through the binary: both backends side by side with their phases and fixed
//! cost, and the GPU statistics timed per requested row-split count (lavapipe in CI).

mod common;

use common::subprune_on;

/// `bench` on a small custom layer, CPU and GPU (lavapipe in CI) side by side: a row per backend
/// with its phases and the part of its time that does not grow with the images, and the GPU's
/// statistics of device-resident inputs; `--no-greedy` leaves the greedy cells as `–`, not NaN.
#[test]
fn bench_prints_both_backends_with_phases_and_fixed_cost() {
    let out = subprune_on(
        "gpu",
        &["bench", "--case", "8,6,24,4", "--reps", "1", "--no-greedy"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("custom "))
        .collect();
    assert_eq!(
        rows.len(),
        3,
        "two backend rows and the sgemm reference:\n{stdout}"
    );
    assert!(rows[0].contains("cpu ("), "{stdout}");
    assert!(
        !rows[1].contains("cpu ("),
        "the second row is the GPU's: {stdout}"
    );
    for row in &rows[..2] {
        assert!(row.contains(" – "), "greedy cell of {row:?}");
    }
    assert!(!stdout.contains("NaN"), "{stdout}");
    assert_eq!(stdout.matches("phases (").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("fixed cost ").count(), 3, "{stdout}");
    assert_eq!(
        stdout.matches("inputs already on the device").count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("t(12 images)"), "{stdout}");
}

/// `bench --splits`: the GPU statistics timed once per requested row-split count, each line
/// saying how many splits the kernels really dispatched (2304 unfolded rows: at most 3); a
/// split count of 0 is refused by name.
#[test]
fn bench_times_each_requested_row_split_count() {
    let args = [
        "bench",
        "--case",
        "8,6,64,4",
        "--reps",
        "1",
        "--no-greedy",
        "--splits",
        "1,3",
    ];
    let out = subprune_on("gpu", &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("row splits 1 (dispatched 1): stats "),
        "{stdout}"
    );
    assert!(
        stdout.contains("row splits 3 (dispatched 3): stats "),
        "{stdout}"
    );
    let gpu_phases = stdout
        .lines()
        .filter(|l| l.contains("phases (") && l.contains(", row splits "))
        .count();
    assert_eq!(
        gpu_phases, 2,
        "the GPU rows' phases name their splits:\n{stdout}"
    );
    let mut bad = args.to_vec();
    *bad.last_mut().unwrap() = "0";
    let out = subprune_on("gpu", &bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--splits"), "{stderr}");
}

/// `bench --asym-only`: the asymmetric statistics on the CPU and on the GPU in both forms, same
/// run: the multiply-adds of the projected form (the CPU's and the GPU's) are those of
/// `D(D+1)/2 + 2·D·m (+ m(m+1)/2 on the GPU) + …` per row, under a third of the unprojected
/// form's `D(D+1) + D²` at D = 72, m = 4; the kernel-time ratio is printed.
#[test]
fn bench_asym_only_compares_the_projected_and_unprojected_forms() {
    let out = subprune_on(
        "gpu",
        &["bench", "--case", "8,6,24,4", "--reps", "1", "--asym-only"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let macs = |label: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label:?} row:\n{stdout}"));
        let before = line.split(" multiply-adds").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // 24 images of 6×6 maps: 864 unfolded rows, D = 72, m = 4.
    let rows = 864.0;
    let (d, m) = (72.0, 4.0);
    let cpu = macs("asym cpu");
    let projected = macs("asym gpu, projected");
    let unprojected = macs("asym gpu, unprojected");
    // Printed with 5 significant digits.
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-4 * want;
    assert!(
        close(cpu, rows * (d * (d + 1.0) / 2.0 + 2.0 * d * m + m)),
        "{stdout}"
    );
    let gpu_rows = d * (d + 1.0) / 2.0 + 2.0 * d * m + m * (m + 1.0) / 2.0;
    assert!(close(projected, rows * gpu_rows), "{stdout}");
    assert!(
        close(unprojected, rows * (d * (d + 1.0) + d * d)),
        "{stdout}"
    );
    assert!(
        stdout.contains("asym gpu kernels: unprojected / projected = "),
        "{stdout}"
    );
    // Nothing else is timed.
    assert!(!stdout.contains("phases ("), "{stdout}");
    assert!(!stdout.contains("reference sgemm"), "{stdout}");
}
