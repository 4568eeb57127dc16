//! The CLI's guards, each run through the binary the way a user would meet it: outputs that
//! would overwrite an input or cannot be written, statistics that overflow or are not finite,
//! sizes and memory beyond what the machine has, bad arguments refused before any work, closed
//! output streams, short messages, GPU geometry refused like the CPU's. One test per defect of
//! issue 7 ("Hardening"); every one failed on the code before its fix.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{assert_failure, bin, normals, stderr, subprune, subprune_on, temp_dir, write_npy};
use subprune::rng::Rng;
use subprune::{npy, Tensor};

fn random(rng: &mut Rng, shape: &[usize], scale: f64) -> Tensor {
    Tensor::new(shape.to_vec(), normals(rng, shape.iter().product(), scale)).unwrap()
}

/// A failed run (exit 1, no panic) whose stderr holds every needle; returns stderr.
fn expect_failure(out: &Output, needles: &[&str]) -> String {
    assert_failure(out, Some(1), "the run", needles)
}

/// Inputs of shape `x` and a weight of shape `w` (normal values from `rng`) written to `dir` as
/// `x.npy` and `w.npy`; returns their paths.
fn layer_files(dir: &Path, rng: &mut Rng, x: &[usize], w: &[usize]) -> (String, String) {
    (
        write_npy(dir, "x.npy", &random(rng, x, 1.0)),
        write_npy(dir, "w.npy", &random(rng, w, 1.0)),
    )
}

/// `subprune --backend BACKEND select --inputs X --weight W`, then `extra`.
fn select_on(backend: &str, x: &str, w: &str, extra: &[&str]) -> Output {
    let mut args = vec!["select", "--inputs", x, "--weight", w];
    args.extend_from_slice(extra);
    subprune_on(backend, &args)
}

/// The run stopped before any work: no backend was opened, no plan printed.
fn assert_no_work(err: &str) {
    assert!(
        !err.contains("backend:") && !err.contains("plan:"),
        "work started before the error: {err}"
    );
}

/// A small Linear layer: inputs (90, 9), weight (4, 9).
struct Layer {
    dir: common::TempDir,
    inputs: String,
    weight: String,
}

fn linear_layer(tag: &str) -> Layer {
    let mut rng = Rng::new(7);
    let dir = temp_dir(tag);
    Layer {
        inputs: write_npy(&dir, "b.npy", &random(&mut rng, &[90, 9], 1.0)),
        weight: write_npy(&dir, "w.npy", &random(&mut rng, &[4, 9], 1.0)),
        dir,
    }
}

impl Layer {
    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["select", "--inputs", &self.inputs, "--weight", &self.weight];
        args.extend_from_slice(extra);
        args
    }
}

// Item 1: an output that is one of the inputs, or a read-only file.
#[test]
fn output_over_an_input_is_refused_before_any_work() {
    let layer = linear_layer("out-is-input");
    let mut rng = Rng::new(8);
    let target = write_npy(&layer.dir, "a.npy", &random(&mut rng, &[90, 9], 1.0));
    let link = layer.dir.join("link.npy");
    std::os::unix::fs::symlink(&layer.inputs, &link).unwrap();
    let hard = layer.dir.join("hard.npy");
    std::fs::hard_link(&layer.weight, &hard).unwrap();
    let dotted = format!("{}/./b.npy", layer.dir.display());
    let before: Vec<Vec<u8>> = [&layer.inputs, &layer.weight, &target]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for (out, names) in [
        (layer.inputs.as_str(), "inputs"),
        (layer.weight.as_str(), "weight"),
        (target.as_str(), "target"),
        (link.to_str().unwrap(), "inputs"),
        (hard.to_str().unwrap(), "weight"),
        (dotted.as_str(), "inputs"),
    ] {
        let out = subprune(&layer.args(&["--target", &target, "--out-weight", out]));
        let err = expect_failure(&out, &["same file", names]);
        assert_no_work(&err);
    }
    let after: Vec<Vec<u8>> = [&layer.inputs, &layer.weight, &target]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(before, after, "an input was modified");
}

#[test]
fn read_only_output_is_refused_and_a_writable_one_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let layer = linear_layer("out-mode");
    let ro = layer.dir.join("ro.npy");
    std::fs::write(&ro, b"precious").unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = subprune(&layer.args(&["--out-weight", ro.to_str().unwrap()]));
    let err = expect_failure(&out, &["read-only", "ro.npy"]);
    assert_no_work(&err);
    assert_eq!(std::fs::read(&ro).unwrap(), b"precious");

    let rw = layer.dir.join("rw.npy");
    std::fs::write(&rw, b"old").unwrap();
    std::fs::set_permissions(&rw, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = subprune(&layer.args(&["--out-weight", rw.to_str().unwrap()]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&rw).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the replaced file's mode changed");
    assert_eq!(npy::read_f32(&rw).unwrap().shape, vec![4, 5]);
}

// Item 2: finite inputs whose statistics overflow f32.
#[test]
fn overflowing_statistics_are_an_error_on_both_backends() {
    let mut rng = Rng::new(9);
    let dir = temp_dir("overflow");
    let inputs = write_npy(&dir, "b.npy", &random(&mut rng, &[90, 9], 1e19));
    let weight = write_npy(&dir, "w.npy", &random(&mut rng, &[4, 9], 1.0));
    for backend in ["cpu", "gpu"] {
        let out = subprune_on(
            backend,
            &["select", "--inputs", &inputs, "--weight", &weight, "--json"],
        );
        expect_failure(
            &out,
            &["BᵀB", "not finite", "scale the inputs", "largest |value|"],
        );
        assert!(out.stdout.is_empty(), "{backend}: a result was printed");
    }
    // The same data scaled down runs, and gives the selection of the unscaled problem.
    let mut scaled = npy::read_f32(&inputs).unwrap();
    scaled.data.iter_mut().for_each(|v| *v *= 1e-19);
    let scaled = write_npy(&dir, "b_scaled.npy", &scaled);
    let out = subprune(&["select", "--inputs", &scaled, "--weight", &weight]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn non_finite_statistics_from_any_backend_are_refused() {
    // The check sits where every backend's raw sums become statistics.
    let mut rng = Rng::new(10);
    let x = random(&mut rng, &[6, 3], 1.0);
    let w = random(&mut rng, &[2, 3], 1.0);
    let problem = subprune::LayerProblem::new(&x.shape, w.view(), None).unwrap();
    let mut gram = vec![1.0; 9];
    gram[4] = f64::INFINITY;
    let raw = subprune::layer::RawGrams {
        gram: gram.into(),
        cross: None,
        target_gram: None,
        rows: 6,
        c0: None,
        total: None,
        phases: Default::default(),
    };
    let err = subprune::LayerStats::from_raw(&problem, raw).unwrap_err();
    assert!(
        matches!(&err, subprune::Error::NonFiniteStatistics { detail, .. } if detail.contains("(1, 1)")),
        "{err}"
    );
}

// Item 3: size products from user input.
#[test]
fn size_overflow_is_an_error_not_a_wrap() {
    let mut rng = Rng::new(11);
    let dir = temp_dir("size-overflow");
    let (x, w) = layer_files(&dir, &mut rng, &[2, 3, 5, 5], &[2, 3, 3, 3]);
    for padding in ["536870910,268435454", "4611686018427387903"] {
        let out = select_on("cpu", &x, &w, &["--padding", padding, "--json"]);
        expect_failure(&out, &["padding", "too large"]);
    }
    // Rows = N × positions overflows for a shape no file could hold, but a caller can pass.
    let weight = random(&mut rng, &[2, 3, 1, 1], 1.0);
    let shape = [usize::MAX / 8, 3, 4, 4];
    let problem = subprune::LayerProblem::new(&shape, weight.view(), None).unwrap();
    let err = subprune::CostPlan::new(&problem, shape[0], false, 1).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    assert!(subprune::Tensor::new(vec![usize::MAX, 2], vec![]).is_err());
}

// Item 4: geometry that would run for hours, and progress without a terminal.
#[test]
fn huge_padding_is_refused_and_progress_shows_without_a_terminal() {
    let mut rng = Rng::new(12);
    let dir = temp_dir("padding");
    let (x, w) = layer_files(&dir, &mut rng, &[4, 3, 6, 6], &[2, 3, 3, 3]);
    let start = std::time::Instant::now();
    let out = select_on("cpu", &x, &w, &["--padding", "100000"]);
    expect_failure(
        &out,
        &["padding 100000", "smaller than the dilated kernel (3)"],
    );
    assert!(start.elapsed().as_secs() < 10);
    // stderr is a pipe here: the plan and a line per stage still show.
    let out = subprune(&["select", "--inputs", &x, "--weight", &w, "--padding", "1"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for needle in [
        "plan: 4 images, 144 unfolded rows × 27 columns",
        "GFLOP",
        "statistics: 4/4 images",
        "greedy: 3/3 channels",
    ] {
        assert!(err.contains(needle), "no {needle:?} in {err}");
    }
}

// Item 5: memory estimated before allocating.
#[test]
fn memory_beyond_the_limit_is_refused_before_allocating() {
    let layer = linear_layer("memory");
    let out = subprune(&layer.args(&["--memory-limit", "1K"]));
    let err = expect_failure(&out, &["needs about", "1.0 KiB", "memory limit"]);
    assert_no_work(&err);
    let out = subprune(&layer.args(&["--memory-limit", "lots"]));
    expect_failure(&out, &["--memory-limit", "lots"]);
    let out = subprune(&layer.args(&["--memory-limit", "1G"]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn few_rows_run_the_data_form_in_n_by_d_memory() {
    // Conv → Flatten → Linear over 32 × 7 × 7 maps: D = 1568 columns, 8 rows. The Gram form
    // would need 24·D² ≈ 56 MiB; the data form's n·D state fits in 4 MiB.
    let mut rng = Rng::new(15);
    let dir = temp_dir("data-form");
    let (x, w) = layer_files(&dir, &mut rng, &[8, 32, 7, 7], &[10, 32 * 49]);
    let out = select_on(
        "cpu",
        &x,
        &w,
        &["--memory-limit", "4M", "--json", "--keep", "4"],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("greedy in data form"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["greedy_form"], "data");
    assert_eq!(json["kept"].as_array().unwrap().len(), 4);
}

// Item 6: every argument and path checked before any work.
#[test]
fn bad_arguments_are_refused_before_any_work() {
    let layer = linear_layer("early");
    let missing = layer.dir.join("no/such/folder/out.npy");
    for (args, needles) in [
        (
            vec!["--out-weight", missing.to_str().unwrap()],
            vec!["does not exist", "no/such/folder"],
        ),
        (vec!["--out-weight", "/proc/out.npy"], vec!["/proc"]),
        (vec!["--dependence-tol", "2"], vec!["tolerance 2"]),
        (vec!["--dependence-tol=-1"], vec!["tolerance -1"]),
        (vec!["--batch-images", "0"], vec!["batch"]),
        (vec!["--keep", "10"], vec!["keep 10"]),
    ] {
        let out = subprune(&layer.args(&args));
        let err = expect_failure(&out, &needles);
        assert_no_work(&err);
    }
    let empty = write_npy(
        &layer.dir,
        "empty.npy",
        &Tensor::new(vec![0, 9], vec![]).unwrap(),
    );
    for backend in ["cpu", "auto"] {
        let out = subprune_on(
            backend,
            &["select", "--inputs", &empty, "--weight", &layer.weight],
        );
        let err = expect_failure(&out, &["N = 0"]);
        assert_no_work(&err);
        assert!(!err.contains("warning"), "{err}");
    }
}

// Item 8: a closed or full standard output.
#[test]
fn closed_or_full_stdout_is_an_error_not_a_panic() {
    let layer = linear_layer("stdout");
    let full = Command::new(bin())
        .env("SUBPRUNE_CACHE_DIR", env!("CARGO_TARGET_TMPDIR"))
        .args(["--backend", "cpu"])
        .args(layer.args(&["--json"]))
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    expect_failure(&full, &["writing to standard output"]);

    let mut child = Command::new(bin())
        .env("SUBPRUNE_CACHE_DIR", env!("CARGO_TARGET_TMPDIR"))
        .args(["--backend", "cpu"])
        .args(layer.args(&[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().unwrap();
    expect_failure(&out, &["writing to standard output", "Broken pipe"]);
}

// Item 10: noise and wording.
#[test]
fn messages_are_short_and_say_what_to_do() {
    let layer = linear_layer("wording");
    // Mesa's runtime-dir complaint when XDG_RUNTIME_DIR is unset.
    let out = Command::new(bin())
        .env("SUBPRUNE_CACHE_DIR", env!("CARGO_TARGET_TMPDIR"))
        .env_remove("XDG_RUNTIME_DIR")
        .args(["--backend", "gpu"])
        .args(layer.args(&[]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("XDG_RUNTIME_DIR"),
        "{}",
        stderr(&out)
    );
    // The OS message once, not twice.
    let missing = layer.dir.join("nowhere.npy");
    let out = subprune(&[
        "select",
        "--inputs",
        missing.to_str().unwrap(),
        "--weight",
        &layer.weight,
    ]);
    let err = expect_failure(&out, &["nowhere.npy", "No such file or directory"]);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // A folder as the output.
    let folder = format!("{}/", layer.dir.display());
    let out = subprune(&layer.args(&["--out-weight", &folder]));
    let err = expect_failure(&out, &["is a folder", "pruned.npy"]);
    assert!(!err.contains("Not a directory"), "{err}");
    // Stride 0: the rule, not a debug dump.
    let mut rng = Rng::new(13);
    let x = write_npy(&layer.dir, "x4.npy", &random(&mut rng, &[2, 3, 5, 5], 1.0));
    let w = write_npy(&layer.dir, "w4.npy", &random(&mut rng, &[2, 3, 3, 3], 1.0));
    let out = subprune(&["select", "--inputs", &x, "--weight", &w, "--stride", "0"]);
    let err = expect_failure(&out, &["stride must be ≥ 1"]);
    assert!(!err.contains("ConvGeometry"), "{err}");
    let out = subprune(&["select", "--inputs", &x, "--weight", &w, "--dilation", "3"]);
    let err = expect_failure(&out, &["smaller than the dilated kernel"]);
    assert!(!err.contains("ConvGeometry"), "{err}");
}

#[test]
fn no_adapter_message_is_two_short_lines() {
    let layer = linear_layer("no-adapter");
    // WGPU_BACKEND=metal: no adapter on Linux (or anywhere without Metal).
    if cfg!(target_os = "macos") {
        return;
    }
    let out = Command::new(bin())
        .env("SUBPRUNE_CACHE_DIR", env!("CARGO_TARGET_TMPDIR"))
        .env("WGPU_BACKEND", "metal")
        .args(["--backend", "gpu"])
        .args(layer.args(&[]))
        .output()
        .unwrap();
    let err = expect_failure(
        &out,
        &["no GPU adapter", "mesa-vulkan-drivers", "--backend cpu"],
    );
    let at = err.find("error:").expect("an error line");
    let lines: Vec<&str> = err[at..].lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines.iter().all(|l| l.chars().count() <= 100), "{err}");
}

// Item 11: nothing reaches the consumer.
#[test]
fn all_zero_inputs_give_a_warning() {
    let dir = temp_dir("zeros");
    let mut rng = Rng::new(14);
    let x = write_npy(
        &dir,
        "x.npy",
        &Tensor::new(vec![20, 4], vec![0.0; 80]).unwrap(),
    );
    let w = write_npy(&dir, "w.npy", &random(&mut rng, &[3, 4], 1.0));
    let out = subprune(&["select", "--inputs", &x, "--weight", &w]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing reaches the consumer"),
        "{}",
        stderr(&out)
    );
    let good = write_npy(&dir, "g.npy", &random(&mut rng, &[20, 4], 1.0));
    let out = subprune(&["select", "--inputs", &good, "--weight", &w]);
    assert!(
        !stderr(&out).contains("nothing reaches"),
        "{}",
        stderr(&out)
    );
}

// Item 12: the repository holds what the README and the doc comments point to.
#[test]
fn licences_and_the_method_summary_are_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).unwrap();
    assert!(mit.contains("Permission is hereby granted"));
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0"));
    let method = std::fs::read_to_string(root.join("docs/ALGORITHM.md")).unwrap();
    for section in [
        "Gram form",
        "Marginal gain",
        "downdate",
        "data form",
        "AsymInChange",
    ] {
        assert!(
            method.contains(section),
            "docs/ALGORITHM.md lacks {section:?}"
        );
    }
    // Every source file, shader and top-level page that names the method's page names it where
    // it is (relative to the repository root).
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "wgsl") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("shaders"), &mut files);
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    assert!(files.len() > 20, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("ALGORITHM.md") {
            assert!(
                text[..i].ends_with("docs/"),
                "{} points to ALGORITHM.md outside docs/",
                file.display()
            );
        }
    }
}

#[test]
fn gpu_accepts_and_refuses_the_same_geometry_as_the_cpu() {
    // Item 9: the GPU used to size its chunks from the buffer limit and refused `--padding 1000`
    // with a u32 message although the batch was small. Now the geometry check is the same on both
    // backends, and the GPU sizes its chunks from the batch.
    let mut rng = Rng::new(19);
    let dir = temp_dir("gpu-geometry");
    let (x, w) = layer_files(&dir, &mut rng, &[3, 2, 5, 5], &[2, 2, 3, 3]);
    let select = |backend: &str, extra: &[&str]| select_on(backend, &x, &w, extra);
    for backend in ["cpu", "gpu"] {
        let out = select(backend, &["--padding", "1000"]);
        let err = expect_failure(&out, &["padding 1000", "smaller than the dilated kernel"]);
        assert!(!err.contains("u32"), "{backend}: {err}");
    }
    let mut outputs = Vec::new();
    for backend in ["cpu", "gpu"] {
        let out = select(backend, &["--padding", "2", "--json"]);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        outputs.push(v["kept"].clone());
    }
    assert_eq!(outputs[0], outputs[1]);
}
