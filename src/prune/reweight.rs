//! New consumer weights for a keep set in the form closest to the original weights
//! (`docs/ALGORITHM.md` §2, rank-deficient layers):
//!
//! ```text
//! W~_S = W_S + (G[S,S] + λI)⁻¹ (C0[S,:] − G[S,S] W_S),   λ = ridge · mean diag G[S,S]
//! ```
//!
//! With `ridge = 0` and `G[S,S]` well conditioned this is the plain least-squares
//! `G[S,S]⁻¹ C0[S,:]`; when `G[S,S]` is singular (fewer unfolded rows than kept columns) the
//! directions it cannot see keep their original weights instead of being set to zero. `λ` never
//! falls under `dependence_tol` times the block's largest diagonal entry: the precision the
//! statistics were accumulated in.

use crate::error::{Error, Result};
use crate::linalg::gemm::Par;
use crate::linalg::{backward_solve_par, cholesky_dropping_par, forward_solve_par};
use crate::stats::{matmul_f64, LayerStats};

/// The reweighted rows of the kept channels and the error they leave.
#[derive(Clone, Debug)]
pub struct RidgeReweighted {
    /// `W~_S`, `(|S|·ks) × m` row-major, kept channels in the given order.
    pub weight: Vec<f64>,
    /// `‖AW − B_S W~_S‖²` (absolute, in the units of `stats.total`).
    pub residual: f64,
}

/// Column indices of the kept channels' groups, in order.
fn kept_columns(stats: &LayerStats, kept: &[usize]) -> Vec<usize> {
    let ks = stats.layout.columns_per_channel;
    kept.iter().flat_map(|&c| c * ks..(c + 1) * ks).collect()
}

/// `‖AW − B_S V‖² = total − 2⟨V, C0_S⟩ + ⟨V, G_SS V⟩` for kept rows `v` (clamped at 0).
fn residual(stats: &LayerStats, gss: &[f64], c0s: &[f64], v: &[f64], n: usize) -> Result<f64> {
    let m = stats.outputs;
    let gv = matmul_f64(gss, v, n, n, m)?;
    let cross: f64 = v.iter().zip(c0s).map(|(a, b)| a * b).sum();
    let quad: f64 = v.iter().zip(&gv).map(|(a, b)| a * b).sum();
    Ok((stats.total - 2.0 * cross + quad).max(0.0))
}

/// The kept channels' new rows: reweighted in the closest-to-original ridge form when `reweight`,
/// else the original rows; and the residual they leave.
pub fn kept_rows(
    stats: &LayerStats,
    kept: &[usize],
    reweight: bool,
    ridge: f64,
    dependence_tol: f64,
) -> Result<RidgeReweighted> {
    if !(ridge >= 0.0 && ridge.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "ridge {ridge} must be finite and ≥ 0"
        )));
    }
    let cols = kept_columns(stats, kept);
    let (m, n) = (stats.outputs, cols.len());
    let gss = stats.gram.submatrix(&cols)?;
    let ws: Vec<f64> = cols
        .iter()
        .flat_map(|&c| stats.weight[c * m..(c + 1) * m].iter().copied())
        .collect();
    let c0s: Vec<f64> = cols
        .iter()
        .flat_map(|&c| stats.c0[c * m..(c + 1) * m].iter().copied())
        .collect();
    if !reweight {
        let r = residual(stats, &gss, &c0s, &ws, n)?;
        return Ok(RidgeReweighted {
            weight: ws,
            residual: r,
        });
    }
    // rhs = C0_S − G_SS W_S
    let gw = matmul_f64(&gss, &ws, n, n, m)?;
    let mut delta: Vec<f64> = c0s.iter().zip(&gw).map(|(c, g)| c - g).collect();
    let diag: Vec<f64> = (0..n).map(|i| gss[i * n + i]).collect();
    let mean_diag = diag.iter().sum::<f64>() / n.max(1) as f64;
    let largest = diag.iter().fold(0.0f64, |m, &d| m.max(d));
    // The floor ties the solve to the precision of the statistics: eigenvalues of G[S,S] under
    // `dependence_tol` of its largest diagonal entry are f32 noise (or the null space of a
    // rank-deficient block), and are damped rather than inverted. With `ridge = 0` this is exact
    // least squares up to that precision; a hard pseudo-inverse by dropping Cholesky pivots
    // under the same cutoff is not enough: the kept columns can still be ill-conditioned, and on
    // MNIST's rank-deficient conv2 → fc1 it gave top-1 0.15 instead of 0.76 (EVALUATION.md).
    let lambda = (ridge * mean_diag).max(dependence_tol * largest);
    let mut l = gss.clone();
    for i in 0..n {
        l[i * n + i] += lambda;
    }
    let mut ok = vec![false; n];
    let par = Par::all();
    cholesky_dropping_par(&mut l, n, &diag, 0.0, &mut ok, par);
    forward_solve_par(&l, n, &ok, &mut delta, m, par);
    backward_solve_par(&l, n, &ok, &mut delta, m, par);
    let weight: Vec<f64> = ws.iter().zip(&delta).map(|(w, dl)| w + dl).collect();
    let r = residual(stats, &gss, &c0s, &weight, n)?;
    Ok(RidgeReweighted {
        weight,
        residual: r,
    })
}
