//! Layer statistics against an f64 reference computed here from the raw data (explicit im2col,
//! f64 sums), on sizes that are not multiples of any tile, on the CPU backend (the reference
//! backend) and on the GPU backend's tiled matmul core, every variant: each tile configuration the device allows, one row split and many, symmetric (`BᵀB`)
//! and cross (`AᵀB`, with a target) sums, conv (implicit im2col) and dense operands, f16 inputs;
//! through the whole statistics path, so `C0 = X·W` and `‖AW‖²` computed on the device are
//! checked too. Runs on lavapipe where there is no GPU (and fails, never skips, without an
//! adapter).
//!
//! Tolerances: statistics entry-wise `|gpu − f64| ≤ 4e-6 · max |f64|` (f32 sums of ≤ 4096 rows
//! folded into compensated pairs; the CPU backend's own f32 sums meet 2e-6), `C0` relative to
//! its largest entry (4e-6), `‖AW‖²` relative (1e-5).

mod common;
#[path = "common/wgsl.rs"]
mod wgsl;

use common::{flatten_rows, gpu, im2col, Geometry};
use subprune::backend::gpu::TileConfig;
use subprune::backend::KernelClock;
use subprune::rng::Rng;
use subprune::{layer_stats, Backend, ConvOptions, CpuBackend, LayerProblem, LayerStats, Tensor};
use wgsl::shader_struct;

const STATS_TOL: f64 = 4e-6;
const C0_TOL: f64 = 4e-6;
const TOTAL_TOL: f64 = 1e-5;

fn activations(rng: &mut Rng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data = rng
        .normal_vec(n)
        .into_iter()
        .map(|v| (v + 0.3).max(0.0) * scale)
        .collect();
    Tensor::new(shape.to_vec(), data).unwrap()
}

/// f64 reference: unfolded rows of one input (row-major, `rows × D`), by the oracle's im2col.
fn unfold(x: &Tensor, kernel: [usize; 2], conv: Option<ConvOptions>) -> (Vec<f64>, usize) {
    let rows = match conv {
        None => flatten_rows(x),
        Some(o) => im2col(
            x,
            &Geometry {
                kernel,
                stride: o.stride,
                padding: o.padding,
                dilation: o.dilation,
            },
        ),
    };
    (rows.data, rows.cols)
}

/// `LᵀR` in f64 (`D × D`).
fn gram(l: &[f64], r: &[f64], d: usize) -> Vec<f64> {
    let rows = l.len() / d;
    let mut g = vec![0.0; d * d];
    for k in 0..rows {
        let (lr, rr) = (&l[k * d..(k + 1) * d], &r[k * d..(k + 1) * d]);
        for i in 0..d {
            let a = lr[i];
            if a != 0.0 {
                for (gj, &b) in g[i * d..(i + 1) * d].iter_mut().zip(rr) {
                    *gj += a * b;
                }
            }
        }
    }
    g
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

use common::assert_close_scaled as assert_close;

/// Checks the statistics of one layer (with or without target) on `backend` against f64.
fn check(
    what: &str,
    backend: &dyn Backend,
    x: &Tensor,
    target: Option<&Tensor>,
    w: &Tensor,
    conv: Option<ConvOptions>,
    half: bool,
) {
    let problem = LayerProblem::new(&x.shape, w.view(), conv).unwrap();
    let stats: LayerStats =
        layer_stats(backend, &problem, x.view(), target.map(|t| t.view()), 7).unwrap();
    let kernel = if w.shape.len() == 4 {
        [w.shape[2], w.shape[3]]
    } else {
        [1, 1]
    };
    let round = |t: &Tensor| -> Tensor {
        if half {
            let data = t
                .data
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect();
            Tensor::new(t.shape.clone(), data).unwrap()
        } else {
            t.clone()
        }
    };
    let (b, d) = unfold(&round(x), kernel, conv);
    let a = target.map(|t| unfold(&round(t), kernel, conv).0);
    let g = gram(&b, &b, d);
    assert_close(
        &format!("{what}: BᵀB"),
        stats.gram.values().unwrap(),
        &g,
        STATS_TOL,
    );
    let x_mat = match &a {
        Some(a) => gram(&b, a, d),
        None => g.clone(),
    };
    let m = problem.outputs;
    let wm = &problem.weight;
    let mut c0 = vec![0.0; d * m];
    for i in 0..d {
        for k in 0..d {
            let xv = x_mat[i * d + k];
            for j in 0..m {
                c0[i * m + j] += xv * wm[k * m + j];
            }
        }
    }
    assert_close(
        &format!("{what}: C0"),
        stats.c0.values().unwrap(),
        &c0,
        C0_TOL,
    );
    let h = match &a {
        Some(a) => gram(a, a, d),
        None => g,
    };
    let mut total = 0.0;
    for i in 0..d {
        for k in 0..d {
            let hv = h[i * d + k];
            for j in 0..m {
                total += wm[i * m + j] * hv * wm[k * m + j];
            }
        }
    }
    let rel = (stats.total - total).abs() / total.abs().max(1e-30);
    assert!(
        rel <= TOTAL_TOL,
        "{what}: ‖AW‖² {} vs f64 {total} (rel {rel:e})",
        stats.total
    );
    assert!(stats.phases.total() > 0.0, "{what}: phases not timed");
}

/// The layers every backend's statistics are checked on: a conv and a dense consumer, each
/// with and without a target.
struct Layers {
    conv: ConvOptions,
    x: Tensor,
    t: Tensor,
    w: Tensor,
    xd: Tensor,
    td: Tensor,
    wd: Tensor,
}

fn layers() -> Layers {
    let mut rng = Rng::new(41);
    let conv = ConvOptions {
        stride: [2, 1],
        padding: [1, 2],
        dilation: [1, 2],
    };
    Layers {
        conv,
        // Conv: 13 channels of 9×11, 3×3 kernel: D = 117, rows 5·5·11 per image.
        x: activations(&mut rng, &[17, 13, 9, 11], 1.0),
        t: activations(&mut rng, &[17, 13, 9, 11], 1.0),
        w: Tensor::new(vec![5, 13, 3, 3], rng.normal_vec(5 * 13 * 9)).unwrap(),
        // Dense: D = 131 (not a multiple of 8, 64 or 128).
        xd: activations(&mut rng, &[61, 131], 1.0),
        td: activations(&mut rng, &[61, 131], 1.0),
        wd: Tensor::new(vec![3, 131], rng.normal_vec(3 * 131)).unwrap(),
    }
}

/// Every layer of [`layers`] on `backend`, against f64.
fn check_layers(tag: &str, backend: &dyn Backend, l: &Layers) {
    let conv = Some(l.conv);
    for (what, x, target, w, conv) in [
        ("conv", &l.x, None, &l.w, conv),
        ("conv+target", &l.x, Some(&l.t), &l.w, conv),
        ("dense", &l.xd, None, &l.wd, None),
        ("dense+target", &l.xd, Some(&l.td), &l.wd, None),
    ] {
        check(&format!("{what} {tag}"), backend, x, target, w, conv, false);
    }
}

#[test]
fn cpu_statistics_match_f64() {
    check_layers("cpu", &CpuBackend::new(), &layers());
}

#[test]
fn every_tile_config_and_split_count_matches_f64() {
    let l = layers();
    let configs = gpu().supported_tile_configs();
    assert!(!configs.is_empty());
    for config in configs {
        for splits in [1, 9] {
            let b = gpu()
                .clone()
                .with_tile_config(config)
                .unwrap()
                .with_row_splits(Some(splits));
            check_layers(&format!("{config}, {splits} splits"), &b, &l);
        }
    }
}

/// Chunks that use more row splits than the ones before (and fewer after): each split slice is
/// cleared when a chunk first writes it, and only the slices written are folded. The pool is
/// dirtied first, so that a slice left uncleared (or folded unwritten) shows in the sums.
#[test]
fn split_slices_are_cleared_as_chunks_first_use_them() {
    use subprune::backend::StatsSpec;
    let mut rng = Rng::new(46);
    let d = 67;
    let w = Tensor::new(vec![3, d], rng.normal_vec(3 * d)).unwrap();
    // Gathering off: every batch is its own chunk; 1024 rows per split at least, so these
    // batches dispatch 1, 3, 9 and 1 splits.
    let backend = gpu().clone().with_gather_bytes(0).with_row_splits(Some(9));
    let dirty = activations(&mut rng, &[9500, d], 1e6);
    let problem = LayerProblem::new(&dirty.shape, w.view(), None).unwrap();
    // The most splits a chunk uses: all 9 planned, then 3 of them.
    for (sizes, used) in [(&[300, 2500, 9500, 40][..], 9), (&[300, 2500, 40][..], 3)] {
        layer_stats(&backend, &problem, dirty.view(), None, 9500).unwrap();
        let batches: Vec<Tensor> = sizes
            .iter()
            .map(|&n| activations(&mut rng, &[n, d], 1.0))
            .collect();
        let spec = StatsSpec::new(problem.unfolding, false).with_weight(&problem.weight, 3);
        let mut acc = backend.stats_accumulator(spec).unwrap();
        for b in &batches {
            acc.add_batch(b.view(), None).unwrap();
        }
        let raw = acc.finish_with_weight(&problem.weight, 3).unwrap();
        assert_eq!(
            raw.phases.row_splits, used,
            "{sizes:?}: the most splits a chunk used"
        );
        let stats = LayerStats::from_raw(&problem, raw).unwrap();
        let mut g = vec![0.0; d * d];
        for b in &batches {
            let (rows, _) = unfold(b, [1, 1], None);
            for (gi, v) in g.iter_mut().zip(gram(&rows, &rows, d)) {
                *gi += v;
            }
        }
        let tag = format!("{sizes:?}");
        assert_close(
            &format!("{tag}: BᵀB"),
            stats.gram.values().unwrap(),
            &g,
            STATS_TOL,
        );
        let wm = &problem.weight;
        let c0: Vec<f64> = (0..d * 3)
            .map(|at| {
                (0..d)
                    .map(|k| g[(at / 3) * d + k] * wm[k * 3 + at % 3])
                    .sum()
            })
            .collect();
        assert_close(
            &format!("{tag}: C0"),
            stats.c0.values().unwrap(),
            &c0,
            C0_TOL,
        );
    }
}

#[test]
fn f16_inputs_match_f64_on_the_rounded_values() {
    let mut rng = Rng::new(42);
    let x = activations(&mut rng, &[9, 7, 10, 6], 1.0);
    let t = activations(&mut rng, &[9, 7, 10, 6], 1.0);
    let w = Tensor::new(vec![4, 7, 3, 3], rng.normal_vec(4 * 7 * 9)).unwrap();
    let conv = ConvOptions {
        padding: [1, 1],
        ..ConvOptions::default()
    };
    for config in gpu().supported_tile_configs() {
        let b = gpu()
            .clone()
            .with_tile_config(config)
            .unwrap()
            .with_f16_inputs(true)
            .with_row_splits(Some(3));
        check(
            &format!("f16 {config}"),
            &b,
            &x,
            Some(&t),
            &w,
            Some(conv),
            true,
        );
    }
}

#[test]
fn gathered_batches_match_f64_with_odd_f16_images() {
    // 75 values per image and batches of 7: the f16 words of an odd number of values cannot be
    // appended to, so gathering must dispatch early; with and without gathering, f16 and f32.
    let mut rng = Rng::new(45);
    let x = activations(&mut rng, &[23, 3, 5, 5], 1.0);
    let t = activations(&mut rng, &[23, 3, 5, 5], 1.0);
    let w = Tensor::new(vec![4, 3, 3, 3], rng.normal_vec(4 * 27)).unwrap();
    let conv = ConvOptions {
        padding: [1, 1],
        ..ConvOptions::default()
    };
    for gather in [0, 1 << 20] {
        for half in [false, true] {
            let b = gpu()
                .clone()
                .with_gather_bytes(gather)
                .with_f16_inputs(half);
            let tag = format!("gather {gather} f16 {half}");
            check(&tag, &b, &x, Some(&t), &w, Some(conv), half);
        }
    }
}

/// The GPU without gathering: every batch is its own dispatch, folded into the compensated
/// pairs.
fn ungathered_gpu() -> subprune::GpuBackend {
    gpu().clone().with_gather_bytes(0)
}

/// A large-magnitude input (mean 1e3, so the sums reach ~1e9) in up to 2400 batches: the error
/// stays within the statistics tolerance.
fn error_stays_within_tolerance_over_many_batches(backend: &dyn Backend) {
    for batch in [2400, 100, 8, 1] {
        let err = large_input_error(backend, batch);
        assert!(err <= STATS_TOL, "batch {batch}: relative error {err:e}");
    }
}

#[test]
fn error_stays_within_tolerance_over_many_batches_on_the_cpu() {
    error_stays_within_tolerance_over_many_batches(&CpuBackend::new());
}

#[test]
fn error_stays_within_tolerance_over_many_batches_on_the_gpu() {
    error_stays_within_tolerance_over_many_batches(&ungathered_gpu());
}

/// The stronger contract: 2400 single-image batches no worse than one batch of 2400. Each batch
/// folds its f32 register sums into the compensated (hi, lo) pair, so this fails when the driver's
/// compiler simplifies TwoSum's `(a + b) − a` to `b` (Mesa's NIR did, before the shader made the
/// intermediates opaque: 2.3e-6 against 3.2e-7 then).
#[test]
fn compensation_survives_the_driver() {
    let backend = ungathered_gpu();
    let (one, many) = (
        large_input_error(&backend, 2400),
        large_input_error(&backend, 1),
    );
    assert!(
        many <= 2.0 * one.max(1e-7),
        "one batch {one:e}, 2400 batches {many:e}"
    );
}

#[test]
fn phases_are_reported_with_their_clock() {
    let mut rng = Rng::new(44);
    let x = activations(&mut rng, &[8, 6, 5, 5], 1.0);
    let w = Tensor::new(vec![3, 6, 3, 3], rng.normal_vec(3 * 6 * 9)).unwrap();
    let problem = LayerProblem::new(
        &x.shape,
        w.view(),
        Some(ConvOptions {
            padding: [1, 1],
            ..ConvOptions::default()
        }),
    )
    .unwrap();
    let stats = layer_stats(gpu(), &problem, x.view(), None, 4).unwrap();
    let p = stats.phases;
    assert!(p.kernel > 0.0 && p.readback > 0.0, "{p:?}");
    if p.clock == KernelClock::Timestamps {
        assert!(p.kernel < 10.0, "{p:?}");
    }
    // Statistics too large for one binding (here: forced) come back in column blocks, and are
    // timed the same way.
    let blocked = gpu().clone().with_max_block_bytes(16 * 54 * 8);
    let stats = layer_stats(&blocked, &problem, x.view(), None, 4).unwrap();
    assert!(stats.c0.values().unwrap().iter().any(|&v| v != 0.0));
    let q = stats.phases;
    assert_eq!(q.clock, p.clock, "{q:?}");
    assert!(q.kernel > 0.0 && q.readback > 0.0, "{q:?}");
}

#[test]
fn gram_params_match_the_shader_struct() {
    // The host struct and the WGSL struct are kept equal by this test, not by comments.
    let (members, size) = shader_struct(subprune::backend::gpu::shaders::GRAM, "GramParams");
    assert_eq!(
        size,
        std::mem::size_of::<subprune::backend::gpu::GramParams>()
    );
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    let expected = [
        "rows",
        "out_rows",
        "out_cols",
        "col0",
        "block_cols",
        "splits",
        "rows_per_split",
        "symmetric",
        "conv",
        "left_stride",
        "right_stride",
        "image_len",
        "positions",
        "zero",
    ];
    assert_eq!(names, expected);
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m.1, 4 * i, "{:?}", m.0);
    }
}

/// Relative max-entry error of `backend`'s `BᵀB` against f64 for 2400 rows of a large-magnitude
/// input (mean 1e3, so the sums reach ~1e9), accumulated `batch` images at a time.
fn large_input_error(backend: &dyn Backend, batch: usize) -> f64 {
    let mut rng = Rng::new(43);
    let (n, d) = (2400, 24);
    let data: Vec<f32> = rng
        .normal_vec(n * d)
        .into_iter()
        .map(|v| 1000.0 + 10.0 * v)
        .collect();
    let x = Tensor::new(vec![n, d], data).unwrap();
    let w = Tensor::new(vec![2, d], rng.normal_vec(2 * d)).unwrap();
    let problem = LayerProblem::new(&x.shape, w.view(), None).unwrap();
    let (b, _) = unfold(&x, [1, 1], None);
    let exact = gram(&b, &b, d);
    let scale = max_abs(&exact);
    let stats = layer_stats(backend, &problem, x.view(), None, batch).unwrap();
    stats
        .gram
        .values()
        .unwrap()
        .iter()
        .zip(&exact)
        .map(|(g, e)| (g - e).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn autotune_measures_once_then_reads_the_cache() {
    use subprune::backend::gpu::TuneSource;
    let dir = std::env::temp_dir().join(format!("subprune-autotune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("nested").join("tile-configs.json");
    let supported = gpu().supported_tile_configs();

    let (tuned, first) = gpu().clone().autotune(Some(&path)).unwrap();
    assert_eq!(first.source, TuneSource::Measured, "{first}");
    assert_eq!(first.cache_problem, None);
    let measured: Vec<_> = first.timings.iter().map(|t| t.0).collect();
    assert_eq!(
        measured, supported,
        "every supported configuration is timed"
    );
    assert!(first.timings.iter().all(|t| t.1 > 0.0 && t.1.is_finite()));
    let fastest = first
        .timings
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
        .0;
    assert_eq!(first.config, fastest);
    assert_eq!(tuned.tile_config(), fastest);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&tuned.adapter_key()), "{text}");

    // Second use: from the cache, no timing.
    let (again, second) = gpu().clone().autotune(Some(&path)).unwrap();
    assert_eq!(second.source, TuneSource::Cached);
    assert_eq!(again.tile_config(), fastest);

    // A corrupt cache is reported and replaced by a fresh measurement.
    std::fs::write(&path, b"{ not json").unwrap();
    let (_, third) = gpu().clone().autotune(Some(&path)).unwrap();
    assert_eq!(third.source, TuneSource::Measured);
    let problem = third.cache_problem.expect("the corrupt cache is reported");
    assert!(problem.contains("tile-configs.json"), "{problem}");
    let (_, fourth) = gpu().clone().autotune(Some(&path)).unwrap();
    assert_eq!(fourth.source, TuneSource::Cached, "the cache was rewritten");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tile_configs_parse_and_refuse_bad_names() {
    let c: TileConfig = "8x16".parse().unwrap();
    assert_eq!(c, TileConfig { wg: 8, bk: 16 });
    assert!(TileConfig::ALL.iter().all(|c| c.is_valid()));
    for bad in ["16", "16x", "12x16", "16x64", "8x32", "axb", ""] {
        let err = bad.parse::<TileConfig>().unwrap_err().to_string();
        assert!(err.contains("WGxBK"), "{bad}: {err}");
    }
}
