//! The `subprune select` binary end to end: `.npy` files in a temporary folder, JSON out, and bad
//! input answered with a non-zero exit and a message that names the problem (never a panic).
//!
//! File names are deliberately neutral (`b.npy`, `w.npy`, …) so that a message naming "inputs" or
//! "weight" names the tensor, not merely echoes the path.

mod common;

use common::{
    assert_failure, normals, npy_by_hand, subprune, subprune_on, temp_dir, write_npy, TempDir,
};
use serde_json::Value;
use subprune::rng::Rng;
use subprune::{npy, Tensor};

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::new(shape.to_vec(), normals(rng, shape.iter().product(), 1.0)).unwrap()
}

/// The parsed `--json` output of a successful run.
#[derive(Debug)]
struct Report {
    order: Vec<usize>,
    kept: Vec<usize>,
    error_curve: Vec<f64>,
    relative_error: f64,
}

fn run_json(args: &[&str]) -> Report {
    run_json_on("cpu", args)
}

fn run_json_on(backend: &str, args: &[&str]) -> Report {
    let out = subprune_on(backend, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "subprune {args:?} failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let usizes = |key: &str| -> Vec<usize> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("no array {key:?} in {v}"))
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    Report {
        order: usizes("order"),
        kept: usizes("kept"),
        error_curve: v["error_curve"]
            .as_array()
            .unwrap_or_else(|| panic!("no error_curve in {v}"))
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect(),
        relative_error: v["relative_error"]
            .as_f64()
            .unwrap_or_else(|| panic!("no relative_error in {v}")),
    }
}

/// A failing run: non-zero exit, no panic, and stderr containing every one of `needles`.
fn expect_failure(args: &[&str], needles: &[&str]) -> String {
    assert_failure(
        &subprune(args),
        None,
        &format!("subprune {args:?}"),
        needles,
    )
}

/// The invariants every successful report must satisfy for `c` channels and budget `k`.
fn check_report(r: &Report, c: usize, k: usize, reweighted: bool) {
    let mut sorted = r.order.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..c).collect::<Vec<_>>(),
        "order is not a permutation"
    );
    let mut head = r.order[..k].to_vec();
    head.sort_unstable();
    assert_eq!(r.kept, head, "kept is not the sorted greedy prefix");
    assert_eq!(r.error_curve.len(), c);
    assert!(
        r.error_curve.windows(2).all(|p| p[1] <= p[0]),
        "{:?}",
        r.error_curve
    );
    assert!(r.error_curve.iter().all(|e| (0.0..=1.0).contains(e)));
    if reweighted {
        // Two f64 computations from the same statistics (sum of greedy gains vs the Cholesky
        // reweighting solve): equal to 1e-9 relative, plus 1e-12 absolute for errors at the
        // f64 rounding level (keeping every channel gives ~1e-16 either way).
        let want = r.error_curve[k - 1];
        assert!(
            (r.relative_error - want).abs() <= 1e-9 * want + 1e-12,
            "relative_error {} vs error_curve[k-1] {want}",
            r.relative_error
        );
    }
}

/// One layer on disk: inputs, weight, optional target, the CLI geometry flags.
struct Layer {
    dir: TempDir,
    inputs: String,
    weight: String,
    target: Option<String>,
    geometry: Vec<&'static str>,
    channels: usize,
    weight_shape: Vec<usize>,
    /// Shape of the pruned weight for `k` kept channels.
    pruned_shape: fn(&[usize], usize) -> Vec<usize>,
}

impl Layer {
    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["select", "--inputs", &self.inputs, "--weight", &self.weight];
        if let Some(t) = &self.target {
            args.extend(["--target", t.as_str()]);
        }
        args.extend(self.geometry.iter().copied());
        args.extend(extra);
        args
    }
}

fn linear_layer(tag: &str) -> Layer {
    let mut rng = Rng::new(1);
    let dir = temp_dir(tag);
    let (n, c, m) = (90, 9, 4);
    Layer {
        inputs: write_npy(&dir, "b.npy", &random(&mut rng, &[n, c])),
        weight: write_npy(&dir, "w.npy", &random(&mut rng, &[m, c])),
        target: None,
        geometry: vec![],
        channels: c,
        weight_shape: vec![m, c],
        pruned_shape: |w, k| vec![w[0], k],
        dir,
    }
}

fn conv_layer(tag: &str, with_target: bool) -> Layer {
    let mut rng = Rng::new(2);
    let dir = temp_dir(tag);
    let (n, c, h, w, m) = (12, 6, 9, 7, 3);
    let inputs = random(&mut rng, &[n, c, h, w]);
    let target = with_target.then(|| {
        let noise = random(&mut rng, &inputs.shape);
        let data = inputs
            .data
            .iter()
            .zip(&noise.data)
            .map(|(a, b)| a + 0.3 * b)
            .collect();
        write_npy(
            &dir,
            "a.npy",
            &Tensor::new(inputs.shape.clone(), data).unwrap(),
        )
    });
    Layer {
        inputs: write_npy(&dir, "b.npy", &inputs),
        weight: write_npy(&dir, "w.npy", &random(&mut rng, &[m, c, 3, 2])),
        target,
        geometry: vec!["--stride", "2", "--padding", "1,1", "--dilation", "2,1"],
        channels: c,
        weight_shape: vec![m, c, 3, 2],
        pruned_shape: |w, k| vec![w[0], k, w[2], w[3]],
        dir,
    }
}

fn flatten_layer(tag: &str) -> Layer {
    let mut rng = Rng::new(3);
    let dir = temp_dir(tag);
    let (n, c, h, w, m) = (80, 5, 2, 3, 3);
    Layer {
        inputs: write_npy(&dir, "b.npy", &random(&mut rng, &[n, c, h, w])),
        weight: write_npy(&dir, "w.npy", &random(&mut rng, &[m, c * h * w])),
        target: None,
        geometry: vec![],
        channels: c,
        weight_shape: vec![m, c * h * w],
        // (M, K·H·W) with H·W = 2·3 positions per channel.
        pruned_shape: |w, k| vec![w[0], k * 2 * 3],
        dir,
    }
}

/// Everything a good run promises, on one layer.
fn check_layer(layer: &Layer) {
    let c = layer.channels;
    let k = c / 2;
    let inputs_before = std::fs::read(&layer.inputs).unwrap();
    let weight_before = std::fs::read(&layer.weight).unwrap();
    let target_before = layer.target.as_ref().map(|t| std::fs::read(t).unwrap());

    let out_path = layer.dir.join("pruned.npy");
    let out_str = out_path.to_str().unwrap();
    let ks = k.to_string();
    let r = run_json(&layer.args(&["--keep", &ks, "--json", "--out-weight", out_str]));
    check_report(&r, c, k, true);
    let pruned = npy::read_f32(&out_path).unwrap();
    assert_eq!(pruned.shape, (layer.pruned_shape)(&layer.weight_shape, k));
    assert!(pruned.data.iter().all(|v| v.is_finite()));

    // Inputs untouched, byte for byte.
    assert_eq!(std::fs::read(&layer.inputs).unwrap(), inputs_before);
    assert_eq!(std::fs::read(&layer.weight).unwrap(), weight_before);
    if let (Some(t), Some(before)) = (&layer.target, target_before) {
        assert_eq!(std::fs::read(t).unwrap(), before);
    }

    // Same selection without reweighting; the original weights can only do worse.
    let plain_path = layer.dir.join("plain.npy");
    let plain = run_json(&layer.args(&[
        "--keep",
        &ks,
        "--json",
        "--no-reweight",
        "--out-weight",
        plain_path.to_str().unwrap(),
    ]));
    check_report(&plain, c, k, false);
    assert_eq!(plain.order, r.order);
    assert!(
        plain.relative_error >= r.relative_error,
        "no-reweight {} < reweighted {}",
        plain.relative_error,
        r.relative_error
    );
    // Without reweighting the written weight is the original one restricted to the kept channels.
    let original = npy::read_f32(&layer.weight).unwrap();
    let plain_weight = npy::read_f32(&plain_path).unwrap();
    let m = layer.weight_shape[0];
    let per_channel = original.data.len() / m / c;
    let want: Vec<f32> = (0..m)
        .flat_map(|o| {
            let original = &original;
            plain.kept.iter().flat_map(move |&ch| {
                let start = (o * c + ch) * per_channel;
                original.data[start..start + per_channel].iter().copied()
            })
        })
        .collect();
    assert_eq!(plain_weight.data, want);

    // Keeping everything: no error left when A = B.
    let all = run_json(&layer.args(&["--keep", &c.to_string(), "--json"]));
    check_report(&all, c, c, true);
    assert_eq!(all.order, r.order);
    if layer.target.is_none() {
        assert!(
            all.relative_error <= 1e-6,
            "keep all: {}",
            all.relative_error
        );
    } else {
        assert!(all.relative_error > 1e-3, "A ≠ B cannot be matched exactly");
    }

    // A fraction resolves to the rounded count.
    let frac = run_json(&layer.args(&["--keep-fraction", "0.5", "--json"]));
    let k_frac = ((c as f64) * 0.5).round() as usize;
    check_report(&frac, c, k_frac, true);
    assert_eq!(frac.kept.len(), k_frac);

    // Batch size changes nothing but rounding.
    let one = run_json(&layer.args(&["--keep", &ks, "--json", "--batch-images", "1"]));
    assert_eq!(one.order, r.order);
    assert!((one.relative_error - r.relative_error).abs() <= 1e-5 * r.relative_error.max(1e-2));

    // The human-readable form succeeds too and reports the budget.
    let out = subprune(&layer.args(&["--keep", &ks]));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("kept {k} of {c} channels")),
        "{text}"
    );
}

#[test]
fn select_on_linear_layer() {
    check_layer(&linear_layer("linear"));
}

#[test]
fn select_on_conv_layer_with_geometry() {
    check_layer(&conv_layer("conv", false));
}

#[test]
fn select_on_conv_layer_with_target() {
    check_layer(&conv_layer("conv-target", true));
}

#[test]
fn select_on_flatten_linear_layer() {
    check_layer(&flatten_layer("flatten"));
}

/// The CLI and the library agree on the selection (same order, same error).
#[test]
fn cli_matches_library() {
    let layer = conv_layer("cli-vs-lib", true);
    let r = run_json(&layer.args(&["--keep", "3", "--json"]));
    let inputs = npy::read_f32(&layer.inputs).unwrap();
    let weight = npy::read_f32(&layer.weight).unwrap();
    let target = npy::read_f32(layer.target.as_ref().unwrap()).unwrap();
    let conv = subprune::ConvOptions {
        stride: [2, 2],
        padding: [1, 1],
        dilation: [2, 1],
    };
    let problem = subprune::LayerProblem::new(&inputs.shape, weight.view(), Some(conv)).unwrap();
    let options = subprune::SelectOptions {
        budget: subprune::Budget::Keep(3),
        ..Default::default()
    };
    let sel = subprune::select(
        &subprune::CpuBackend::new(),
        &problem,
        inputs.view(),
        Some(target.view()),
        &options,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(r.order, sel.run.order);
    assert_eq!(r.kept, sel.kept);
    assert!((r.relative_error - sel.relative_error).abs() <= 1e-9 * sel.relative_error);
}

/// A float64 `.npy` of the given shape and values.
fn f8_npy(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_by_hand("<f8", &format!("({})", dims.join(", ")), &payload)
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let layer = linear_layer("bad");
    let dir = &layer.dir;
    let c = layer.channels;
    let mut rng = Rng::new(9);
    let good = |extra: &[&str]| {
        let mut args = vec![
            "select",
            "--inputs",
            &layer.inputs,
            "--weight",
            &layer.weight,
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let call = |args: &[String], needles: &[&str]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_failure(&refs, needles)
    };

    // Weight with C − 1 input channels.
    let w_short = write_npy(dir, "w_short.npy", &random(&mut rng, &[4, c - 1]));
    expect_failure(
        &[
            "select",
            "--inputs",
            &layer.inputs,
            "--weight",
            &w_short,
            "--keep",
            "2",
        ],
        &["shape", "weight", &format!("[4, {}]", c - 1)],
    );
    // Conv weight whose input channels do not match.
    let x4 = write_npy(dir, "x4.npy", &random(&mut rng, &[3, 4, 5, 5]));
    let w4 = write_npy(dir, "w4.npy", &random(&mut rng, &[2, 3, 3, 3]));
    expect_failure(
        &["select", "--inputs", &x4, "--weight", &w4, "--keep", "2"],
        &["shape", "[2, 3, 3, 3]"],
    );
    // Target of another shape.
    let t_bad = write_npy(dir, "t_bad.npy", &random(&mut rng, &[7, c]));
    call(
        &good(&["--target", &t_bad, "--keep", "2"]),
        &["target", "shape"],
    );

    // Budgets.
    call(&good(&["--keep", "0"]), &["keep 0"]);
    call(
        &good(&["--keep", &(c + 1).to_string()]),
        &[&format!("keep {}", c + 1), &c.to_string()],
    );
    call(&good(&["--keep-fraction", "0"]), &["keep fraction 0"]);
    call(&good(&["--keep-fraction", "1.5"]), &["keep fraction 1.5"]);
    call(&good(&["--keep", "2", "--stride", "2"]), &["stride"]);
    call(&good(&["--keep", "2", "--stride", "x"]), &["--stride"]);

    // Non-finite values.
    let bad_inputs = |inputs: &str, extra: &[&str], needles: &[&str]| {
        let mut args = vec!["select", "--inputs", inputs, "--weight", &layer.weight];
        args.extend(["--keep", "2"]);
        args.extend_from_slice(extra);
        expect_failure(&args, needles);
    };
    for (value, name) in [
        (f32::NAN, "nan"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let mut x = npy::read_f32(&layer.inputs).unwrap();
        x.data[13] = value;
        let bad = write_npy(dir, &format!("x_{name}.npy"), &x);
        bad_inputs(&bad, &[], &["inputs", "non-finite", "index 13"]);
    }
    // The index is the flat index in the whole file, also when the value sits in a later batch.
    let mut x = npy::read_f32(&layer.inputs).unwrap();
    let late = 50 * c + 3;
    x.data[late] = f32::NAN;
    let bad = write_npy(dir, "x_late_nan.npy", &x);
    let index = format!("index {late}");
    bad_inputs(
        &bad,
        &["--batch-images", "4"],
        &["inputs", "non-finite", &index],
    );
    let mut w = npy::read_f32(&layer.weight).unwrap();
    w.data[5] = f32::NAN;
    let w_nan = write_npy(dir, "w_nan.npy", &w);
    expect_failure(
        &[
            "select",
            "--inputs",
            &layer.inputs,
            "--weight",
            &w_nan,
            "--keep",
            "2",
        ],
        &["weight", "non-finite"],
    );
    let mut t = npy::read_f32(&layer.inputs).unwrap();
    t.data[7] = f32::NAN;
    let t_nan = write_npy(dir, "t_nan.npy", &t);
    call(
        &good(&["--target", &t_nan, "--keep", "2"]),
        &["target", "non-finite"],
    );

    // A float64 file.
    let x = npy::read_f32(&layer.inputs).unwrap();
    let f8 = dir.join("x_f8.npy");
    std::fs::write(
        &f8,
        f8_npy(
            &x.shape,
            &x.data.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        ),
    )
    .unwrap();
    let f8 = f8.to_str().unwrap();
    expect_failure(
        &[
            "select",
            "--inputs",
            f8,
            "--weight",
            &layer.weight,
            "--keep",
            "2",
        ],
        &["<f8", "float32", "x_f8.npy"],
    );

    // A missing file is named.
    let missing = dir.join("nowhere.npy");
    expect_failure(
        &[
            "select",
            "--inputs",
            missing.to_str().unwrap(),
            "--weight",
            &layer.weight,
        ],
        &["nowhere.npy"],
    );

    // Truncated files: in the data, in the header, and a bare magic string.
    let bytes = std::fs::read(&layer.inputs).unwrap();
    for (name, len, needle) in [
        ("cut_data.npy", bytes.len() - 5, "data bytes"),
        ("cut_header.npy", 40, "truncated"),
        ("cut_magic.npy", 7, "cut_magic.npy"),
        ("empty.npy", 0, "empty.npy"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        expect_failure(
            &[
                "select",
                "--inputs",
                path.to_str().unwrap(),
                "--weight",
                &layer.weight,
            ],
            &[name, needle],
        );
    }
    // A header whose shape overflows the address space.
    let huge = npy_by_hand("<f4", "(99999999999999, 99999999999999)", &[]);
    let huge_path = dir.join("huge.npy");
    std::fs::write(&huge_path, huge).unwrap();
    expect_failure(
        &[
            "select",
            "--inputs",
            huge_path.to_str().unwrap(),
            "--weight",
            &layer.weight,
        ],
        &["huge.npy", "too large"],
    );
    // Conv geometry that overflows, or is out of range.
    let conv_x = write_npy(dir, "conv_x.npy", &random(&mut rng, &[2, 3, 5, 5]));
    let conv_w = write_npy(dir, "conv_w.npy", &random(&mut rng, &[2, 3, 3, 3]));
    for (flag, value, needle) in [
        ("--padding", "18446744073709551615", "too large"),
        ("--dilation", "18446744073709551615", "too large"),
        ("--padding", "4294967296", "too large"),
        ("--stride", "0", "stride"),
        ("--dilation", "3", "smaller than the dilated kernel"),
    ] {
        expect_failure(
            &[
                "select", "--inputs", &conv_x, "--weight", &conv_w, flag, value,
            ],
            &[needle],
        );
    }
    call(&good(&["--batch-images", "0"]), &["batch"]);
    call(&good(&["--dependence-tol", "2"]), &["tolerance"]);

    // Not a .npy at all.
    let junk = dir.join("junk.npy");
    std::fs::write(&junk, b"these bytes are not an array").unwrap();
    expect_failure(
        &[
            "select",
            "--inputs",
            junk.to_str().unwrap(),
            "--weight",
            &layer.weight,
        ],
        &["junk.npy", "magic"],
    );
}

/// Inputs where channels 1 and 4 are dead (all zero) and channel 2 is an exact copy of channel 6:
/// greedy takes every channel with positive gain first; the dead channels and the later-picked
/// member of the copy pair come last, with zero gain (a flat error curve), the dead ones and the
/// copy in index order.
#[test]
fn dead_and_duplicate_channels_come_last() {
    let mut rng = Rng::new(4);
    let dir = temp_dir("dead");
    for (kind, shape, wshape, geometry) in [
        ("linear", vec![60, 8], vec![3, 8], vec![]),
        (
            "conv",
            vec![6, 8, 6, 5],
            vec![3, 8, 3, 3],
            vec!["--padding", "1"],
        ),
    ] {
        let mut x = random(&mut rng, &shape);
        let c = shape[1];
        let plane: usize = shape[2..].iter().product();
        for img in 0..shape[0] {
            let at = |ch: usize| (img * c + ch) * plane;
            for ch in [1, 4] {
                x.data[at(ch)..at(ch) + plane].fill(0.0);
            }
            let src = x.data[at(6)..at(6) + plane].to_vec();
            x.data[at(2)..at(2) + plane].copy_from_slice(&src);
        }
        let inputs = write_npy(&dir, &format!("{kind}_x.npy"), &x);
        let weight = write_npy(&dir, &format!("{kind}_w.npy"), &random(&mut rng, &wshape));
        let mut args = vec!["select", "--inputs", &inputs, "--weight", &weight];
        args.extend(geometry);
        args.extend(["--keep", "5", "--json"]);
        let r = run_json(&args);
        check_report(&r, c, 5, true);
        let useful = c - 3;
        let (head, tail) = r.order.split_at(useful);
        // Exactly one of the copy pair is useful; the dead channels are never picked early.
        assert_eq!(
            head.iter().filter(|&&ch| ch == 2 || ch == 6).count(),
            1,
            "{kind}: order {:?}",
            r.order
        );
        assert!(
            !head.contains(&1) && !head.contains(&4),
            "{kind}: {:?}",
            r.order
        );
        assert!(
            tail.windows(2).all(|p| p[0] < p[1]),
            "{kind}: tail {tail:?}"
        );
        // Positive gains strictly lower the error; zero gains leave it exactly where it was.
        let curve = &r.error_curve;
        assert!(
            curve[..useful].windows(2).all(|p| p[1] < p[0]),
            "{kind}: {curve:?}"
        );
        assert!(curve[useful - 1] <= 1e-6, "{kind}: {curve:?}");
        assert!(
            curve[useful..].iter().all(|&e| e == curve[useful - 1]),
            "{kind}: {curve:?}"
        );
    }
}

/// `subprune select --backend gpu` gives the same selection as `--backend cpu` (on lavapipe where
/// there is no GPU: this test must run, not skip): same order and keep set, error curves within
/// 1e-4 (they are normalized to [0, 1]; the GPU keeps its greedy state in f32).
#[test]
fn gpu_backend_gives_the_same_json_as_cpu() {
    let layers = [
        linear_layer("gpu-linear"),
        conv_layer("gpu-conv", false),
        conv_layer("gpu-conv-target", true),
        flatten_layer("gpu-flatten"),
    ];
    for layer in &layers {
        let k = (layer.channels / 2).to_string();
        let args = layer.args(&["--keep", &k, "--json"]);
        let cpu = run_json_on("cpu", &args);
        let gpu = run_json_on("gpu", &args);
        assert_eq!(gpu.order, cpu.order, "order differs on {}", layer.inputs);
        assert_eq!(gpu.kept, cpu.kept, "kept differs on {}", layer.inputs);
        assert_eq!(gpu.error_curve.len(), cpu.error_curve.len());
        for (g, c) in gpu.error_curve.iter().zip(&cpu.error_curve) {
            assert!((g - c).abs() <= 1e-4, "error curves differ: {g} vs {c}");
        }
        assert!((gpu.relative_error - cpu.relative_error).abs() <= 1e-4);
    }
}

/// Fewer unfolded rows than columns (too little calibration data for the selection to mean
/// anything past the rank of B): the run still succeeds, and stderr says so.
#[test]
fn too_few_rows_gives_a_warning() {
    let mut rng = Rng::new(9);
    let dir = temp_dir("few-rows");
    let inputs = write_npy(&dir, "b.npy", &random(&mut rng, &[5, 8]));
    let weight = write_npy(&dir, "w.npy", &random(&mut rng, &[3, 8]));
    let out = subprune(&[
        "select", "--inputs", &inputs, "--weight", &weight, "--keep", "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: 5 unfolded rows for 8 columns"),
        "{stderr}"
    );
    let enough = write_npy(&dir, "b2.npy", &random(&mut rng, &[50, 8]));
    let out = subprune(&[
        "select", "--inputs", &enough, "--weight", &weight, "--keep", "2",
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

/// A command's `--help` lists its own flags first and the backend flags every command takes
/// under their own heading, not mixed in.
#[test]
fn help_keeps_the_backend_flags_apart() {
    for command in ["prune", "select", "bench", "eval"] {
        let out = subprune(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        let heading = help
            .find("Backend options (any command):")
            .unwrap_or_else(|| panic!("{command} --help has no backend heading:\n{help}"));
        for flag in [
            "--backend",
            "--adapter",
            "--f16-inputs",
            "--no-autotune",
            "--tile",
        ] {
            let at = help
                .find(&format!("  {flag} "))
                .unwrap_or_else(|| panic!("{command} --help does not list {flag}:\n{help}"));
            assert!(
                at > heading,
                "{command} --help lists {flag} among its own flags:\n{help}"
            );
        }
    }
}
