//! Random layer problems with their f64 oracle, shared by `layer_engine.rs` and
//! `layer_statistics.rs` (included with `#[path = "common/instances.rs"] mod instances;`), and the
//! tolerances they are checked to.
//!
//! Tolerances. The statistics are accumulated in f32 (partial sums over ≤ 8192 rows, then f64),
//! so the engine and the oracle differ by rounding of order 1e-7 relative on the Gram entries,
//! amplified by the conditioning of the instances (all well conditioned, n ≥ 5·D). Errors are
//! compared as `|err − oracle| ≤ ERR_TOL · max(oracle, ERR_FLOOR)`.

#![allow(dead_code)]

use crate::common::{
    flatten_rows, im2col, normals, perturbed, scaled_channels, spread_scales, weight_matrix,
    Geometry, Mat, Oracle,
};
use subprune::rng::Rng;
use subprune::{
    layer_stats, run_greedy, select, Backend, ConvOptions, CpuBackend, GreedyRun, LayerProblem,
    LayerSelection, LayerStats, SelectOptions, Tensor, DEFAULT_DEPENDENCE_TOL,
};

/// Relative tolerance on normalized errors (error curve, reweighted and non-reweighted error).
pub const ERR_TOL: f64 = 1e-5;
/// Below this normalized error the tolerance is absolute (`ERR_TOL · ERR_FLOOR` = 1e-7).
pub const ERR_FLOOR: f64 = 1e-2;
/// Relative tolerance on reweighted consumer weights: `max |w − w_oracle| ≤ W_TOL · max |w_oracle|`.
pub const W_TOL: f64 = 1e-4;
/// Keeping every channel with `A = B` must leave (numerically) no error.
pub const FULL_KEEP_TOL: f64 = 1e-6;
/// The oracle's best and second-best candidates must differ by at least this much normalized
/// error at every step, so that f32 rounding in the engine cannot legitimately flip a choice.
pub const MIN_ORACLE_GAP: f64 = 1e-5;

/// One random layer problem with its oracle.
pub struct Instance {
    pub name: &'static str,
    pub inputs: Tensor,
    pub target: Option<Tensor>,
    pub weight: Tensor,
    pub conv: Option<ConvOptions>,
    pub oracle: Oracle,
}

/// The largest discrepancies seen on one instance.
#[derive(Debug, Default)]
pub struct Discrepancy {
    /// max |err − oracle| / max(oracle, ERR_FLOOR) over the error curve.
    pub curve: f64,
    /// Same over the reweighted error of every prefix.
    pub reweighted: f64,
    /// Same over the non-reweighted error of every prefix.
    pub no_reweight: f64,
    /// max |w − w_oracle| / max |w_oracle| over every prefix.
    pub weight: f64,
}

pub fn rel(err: f64, oracle: f64) -> f64 {
    (err - oracle).abs() / oracle.max(ERR_FLOOR)
}

pub fn linear_instance(seed: u64, n: usize, c: usize, m: usize, noise: Option<f64>) -> Instance {
    let mut rng = Rng::new(seed);
    let scales = spread_scales(&mut rng, c, 0.4, 2.0);
    let inputs = scaled_channels(&mut rng, &[n, c], &scales);
    let target = noise.map(|s| perturbed(&mut rng, &inputs, s));
    let weight = Tensor::new(vec![m, c], normals(&mut rng, m * c, 1.0)).unwrap();
    let b = flatten_rows(&inputs);
    let a = target
        .as_ref()
        .map(flatten_rows)
        .unwrap_or_else(|| b.clone());
    let oracle = Oracle::new(b, &a, weight_matrix(&weight), 1);
    Instance {
        name: "linear",
        inputs,
        target,
        weight,
        conv: None,
        oracle,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn conv_instance(
    name: &'static str,
    seed: u64,
    input: [usize; 4],
    m: usize,
    kernel: [usize; 2],
    conv: ConvOptions,
    noise: Option<f64>,
) -> Instance {
    let mut rng = Rng::new(seed);
    let c = input[1];
    let scales = spread_scales(&mut rng, c, 0.4, 2.0);
    let inputs = scaled_channels(&mut rng, &input, &scales);
    let target = noise.map(|s| perturbed(&mut rng, &inputs, s));
    let ks = kernel[0] * kernel[1];
    let weight = Tensor::new(
        vec![m, c, kernel[0], kernel[1]],
        normals(&mut rng, m * c * ks, 1.0),
    )
    .unwrap();
    let g = Geometry {
        kernel,
        stride: conv.stride,
        padding: conv.padding,
        dilation: conv.dilation,
    };
    let b = im2col(&inputs, &g);
    let a = target
        .as_ref()
        .map(|t| im2col(t, &g))
        .unwrap_or_else(|| b.clone());
    let oracle = Oracle::new(b, &a, weight_matrix(&weight), ks);
    Instance {
        name,
        inputs,
        target,
        weight,
        conv: Some(conv),
        oracle,
    }
}

pub fn flatten_instance(seed: u64, input: [usize; 4], m: usize, noise: Option<f64>) -> Instance {
    let mut rng = Rng::new(seed);
    let [_, c, h, w] = input;
    let scales = spread_scales(&mut rng, c, 0.4, 2.0);
    let inputs = scaled_channels(&mut rng, &input, &scales);
    let target = noise.map(|s| perturbed(&mut rng, &inputs, s));
    let weight = Tensor::new(vec![m, c * h * w], normals(&mut rng, m * c * h * w, 1.0)).unwrap();
    let b = flatten_rows(&inputs);
    let a = target
        .as_ref()
        .map(flatten_rows)
        .unwrap_or_else(|| b.clone());
    let oracle = Oracle::new(b, &a, weight_matrix(&weight), h * w);
    Instance {
        name: "conv→flatten→linear",
        inputs,
        target,
        weight,
        conv: None,
        oracle,
    }
}

pub fn conv_options(stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]) -> ConvOptions {
    ConvOptions {
        stride,
        padding,
        dilation,
    }
}

/// The expected pruned weight: the oracle's `W~` (rows = kept columns, in sorted channel order)
/// written back as `(M, K·ks)` row-major, which is the flat layout of `(M, K)`, `(M, K, kh, kw)`
/// and `(M, K·H·W)` alike.
pub fn expected_weight_data(z: &Mat) -> Vec<f64> {
    let mut out = vec![0.0; z.rows * z.cols];
    for o in 0..z.cols {
        for r in 0..z.rows {
            out[o * z.rows + r] = z.at(r, o);
        }
    }
    out
}

/// The pruned weight's expected shape for `k` kept channels.
pub fn expected_weight_shape(inst: &Instance, k: usize) -> Vec<usize> {
    let ws = &inst.weight.shape;
    match ws.len() {
        4 => vec![ws[0], k, ws[2], ws[3]],
        _ if inst.inputs.shape.len() == 4 => {
            let hw = inst.inputs.shape[2] * inst.inputs.shape[3];
            vec![ws[0], k * hw]
        }
        _ => vec![ws[0], k],
    }
}

pub fn max_rel_weight(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

pub fn stats_of(inst: &Instance, batch_images: usize) -> (LayerProblem, LayerStats) {
    stats_on(&CpuBackend::new(), inst, batch_images)
}

pub fn stats_on(
    backend: &dyn Backend,
    inst: &Instance,
    batch_images: usize,
) -> (LayerProblem, LayerStats) {
    let problem = LayerProblem::new(&inst.inputs.shape, inst.weight.view(), inst.conv).unwrap();
    let stats = layer_stats(
        backend,
        &problem,
        inst.inputs.view(),
        inst.target.as_ref().map(|t| t.view()),
        batch_images,
    )
    .unwrap();
    (problem, stats)
}

/// `select()` of `backend` on the instance's inputs and target.
pub fn select_instance(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inst: &Instance,
    options: &SelectOptions,
) -> LayerSelection {
    let target = inst.target.as_ref().map(|t| t.view());
    select(
        backend,
        problem,
        inst.inputs.view(),
        target,
        options,
        &mut |_, _, _| {},
    )
    .unwrap()
}

/// Statistics (batches of 128 images) and the greedy of `inputs` on the CPU backend.
pub fn cpu_greedy(problem: &LayerProblem, inputs: &Tensor) -> (LayerStats, GreedyRun) {
    let backend = CpuBackend::new();
    let stats = layer_stats(&backend, problem, inputs.view(), None, 128).unwrap();
    let run = run_greedy(&backend, &stats, DEFAULT_DEPENDENCE_TOL, &mut |_, _, _| {}).unwrap();
    (stats, run)
}
