//! New consumer weights for a keep set (`docs/ALGORITHM.md` §2), in the form closest to the
//! original weights:
//!
//! ```text
//! W~_S = W_S + (G[S,S] + λI)⁻¹ (C0[S,:] − G[S,S] W_S),   λ = ridge · mean diag G[S,S]
//! ```
//!
//! With `ridge = 0` and `G[S,S]` well conditioned this is the plain least-squares
//! `G[S,S]⁻¹ C0[S,:]`; when `G[S,S]` is singular (fewer unfolded rows than kept columns) the
//! directions it cannot see keep their original weights instead of being set to zero. `λ` never
//! falls under `dependence_tol` times the block's largest diagonal entry: the precision the
//! statistics were accumulated in. Every residual is `‖AW − B_S V‖² = total − 2⟨V, C0_S⟩ +
//! ⟨V, G_SS V⟩`, computed by [`residual`] for whatever rows `V` the consumer gets.

use super::stats::{matmul_f64, LayerStats};
use crate::error::{Error, Result};
use crate::linalg::gemm::Par;
use crate::linalg::{backward_solve_par, cholesky_dropping_par, forward_solve_par};

/// New rows of the kept channels and the error they leave.
#[derive(Clone, Debug, PartialEq)]
pub struct Reweighted {
    /// The kept channels, sorted.
    pub kept: Vec<usize>,
    /// `V`, `(|S|·ks) × m` row-major: the rows of the kept channels' column groups, in `kept`
    /// order.
    pub weight: Vec<f64>,
    /// `‖AW − B_S V‖²` (absolute, in the units of `stats.total`; clamped at 0).
    pub residual: f64,
    /// `‖AW − B_S V‖² / ‖AW‖²` (0 when `‖AW‖² = 0`). Not clamped to 1: rows that are not the
    /// least-squares ones can do worse than keeping nothing.
    pub relative_error: f64,
}

/// The least-squares rows of `kept` in the closest-to-original ridge form (module docs), by
/// Cholesky in f64. `ridge` is relative to the mean diagonal of `G[S,S]` (0: plain least squares
/// up to the statistics' precision, `dependence_tol`).
pub fn reweight(
    stats: &LayerStats,
    kept: &[usize],
    ridge: f64,
    dependence_tol: f64,
) -> Result<Reweighted> {
    check_ridge(ridge)?;
    super::greedy::check_dependence_tol(dependence_tol)?;
    let kept = check_kept(stats, kept)?;
    let cols = kept_columns(stats, &kept);
    let (m, n) = (stats.outputs, cols.len());
    let gss = stats.gram.submatrix(&cols)?;
    let ws = rows_of(&stats.weight, &cols, m);
    let c0s = stats.c0.rows_of(&cols)?;
    // rhs = C0_S − G_SS W_S
    let gw = matmul_f64(&gss, &ws, n, n, m)?;
    let mut delta: Vec<f64> = c0s.iter().zip(&gw).map(|(c, g)| c - g).collect();
    let diag: Vec<f64> = (0..n).map(|i| gss[i * n + i]).collect();
    let lambda = ridge_lambda(&diag, ridge, dependence_tol);
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
    finish(stats, kept, &gss, &c0s, weight)
}

/// The ridge `λ` of a kept block whose diagonal (`G[S,S]`'s, the kept columns' squared norms) is
/// `diag`: `ridge · mean diag`, floored at `dependence_tol · largest diag`.
///
/// The floor ties the solve to the precision of the statistics: eigenvalues of G[S,S] under
/// `dependence_tol` of its largest diagonal entry are f32 noise (or the null space of a
/// rank-deficient block), and are damped rather than inverted. With `ridge = 0` this is exact
/// least squares up to that precision; a hard pseudo-inverse by dropping Cholesky pivots under
/// the same cutoff is not enough: the kept columns can still be ill-conditioned, and on MNIST's
/// rank-deficient conv2 → fc1 it gave top-1 0.15 instead of 0.76 (EVALUATION.md).
pub(crate) fn ridge_lambda(diag: &[f64], ridge: f64, dependence_tol: f64) -> f64 {
    let mean_diag = diag.iter().sum::<f64>() / diag.len().max(1) as f64;
    let largest = diag.iter().fold(0.0f64, |m, &d| m.max(d));
    (ridge * mean_diag).max(dependence_tol * largest)
}

/// Checks a relative ridge: finite and ≥ 0.
pub fn check_ridge(ridge: f64) -> Result<()> {
    if !(ridge >= 0.0 && ridge.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "ridge {ridge} must be finite and ≥ 0"
        )));
    }
    Ok(())
}

/// The original rows of `kept`, each channel's rows times `scale[i]` when given (layer
/// sampling's importance weights), and the error they leave.
pub fn original_rows(
    stats: &LayerStats,
    kept: &[usize],
    scale: Option<&[f64]>,
) -> Result<Reweighted> {
    let kept = check_kept(stats, kept)?;
    if let Some(s) = scale {
        if s.len() != kept.len() {
            return Err(Error::Shape(format!(
                "{} row scales for {} kept channels",
                s.len(),
                kept.len()
            )));
        }
    }
    let cols = kept_columns(stats, &kept);
    let (ks, m) = (stats.layout.columns_per_channel, stats.outputs);
    let mut weight = rows_of(&stats.weight, &cols, m);
    if let Some(s) = scale {
        for (i, rows) in weight.chunks_exact_mut(ks * m).enumerate() {
            rows.iter_mut().for_each(|w| *w *= s[i]);
        }
    }
    let gss = stats.gram.submatrix(&cols)?;
    let c0s = stats.c0.rows_of(&cols)?;
    finish(stats, kept, &gss, &c0s, weight)
}

/// The consumer rows of `kept`: [`reweight`]ed when `reweight`, else [`original_rows`].
pub fn kept_rows(
    stats: &LayerStats,
    kept: &[usize],
    reweight: bool,
    ridge: f64,
    dependence_tol: f64,
) -> Result<Reweighted> {
    if reweight {
        self::reweight(stats, kept, ridge, dependence_tol)
    } else {
        original_rows(stats, kept, None)
    }
}

/// `‖AW − B_S V‖² = total − 2⟨V, C0_S⟩ + ⟨V, G_SS V⟩` for kept rows `v` (`n × m`), clamped at 0.
pub fn residual(stats: &LayerStats, gss: &[f64], c0s: &[f64], v: &[f64], n: usize) -> Result<f64> {
    let m = stats.outputs;
    let gv = matmul_f64(gss, v, n, n, m)?;
    let cross: f64 = v.iter().zip(c0s).map(|(a, b)| a * b).sum();
    let quad: f64 = v.iter().zip(&gv).map(|(a, b)| a * b).sum();
    Ok((stats.total - 2.0 * cross + quad).max(0.0))
}

fn finish(
    stats: &LayerStats,
    kept: Vec<usize>,
    gss: &[f64],
    c0s: &[f64],
    weight: Vec<f64>,
) -> Result<Reweighted> {
    let n = gss.len().isqrt();
    let residual = residual(stats, gss, c0s, &weight, n)?;
    let relative_error = if stats.total > 0.0 {
        residual / stats.total
    } else {
        0.0
    };
    Ok(Reweighted {
        kept,
        weight,
        residual,
        relative_error,
    })
}

/// Checks a keep set: non-empty, in range, no repeats. Returns it sorted.
fn check_kept(stats: &LayerStats, kept: &[usize]) -> Result<Vec<usize>> {
    let channels = stats.layout.channels;
    let mut sorted = kept.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Err(Error::InvalidArgument("the keep set is empty".into()));
    }
    if let Some(&bad) = sorted.iter().find(|&&c| c >= channels) {
        return Err(Error::InvalidArgument(format!(
            "channel {bad} is out of range (the layer has {channels})"
        )));
    }
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::InvalidArgument(
            "the keep set repeats a channel".into(),
        ));
    }
    Ok(sorted)
}

/// Column indices of the kept channels' groups, in order.
fn kept_columns(stats: &LayerStats, kept: &[usize]) -> Vec<usize> {
    let ks = stats.layout.columns_per_channel;
    kept.iter().flat_map(|&c| c * ks..(c + 1) * ks).collect()
}

/// Rows `cols` of a row-major matrix with `m` columns, in order.
fn rows_of(matrix: &[f64], cols: &[usize], m: usize) -> Vec<f64> {
    cols.iter()
        .flat_map(|&c| matrix[c * m..(c + 1) * m].iter().copied())
        .collect()
}
