//! The greedy in data form (`docs/ALGORITHM.md` §3), for layers with fewer unfolded rows `n` than
//! columns `D`: the state is the `n × D` matrix of orthogonalised columns `B~ = (I − P_S) B`
//! instead of the `D × D` Schur complement `E = B~ᵀB~`, so memory is `O(n·D)` instead of `O(D²)`.
//! Same gains, same tie-breaking, same dependence rule as the Gram form; f64 on the host.

use rayon::prelude::*;

use super::backend::GreedyState;
use super::greedy::{check_dependence_tol, drive, GreedyRun, Progress, Stage};
use super::problem::LayerProblem;
use super::reweight::{check_ridge, ridge_lambda};
use super::stats::matmul_f64;
use crate::error::{Error, Result};
use crate::linalg::{backward_solve, cholesky_dropping, forward_solve};
use crate::tensor::TensorView;

/// Unfolded rows converted per chunk.
const CHUNK_ROWS: usize = 256;

/// The unfolded `B` of `images` as a column-major `n × D` f64 matrix (column `c` is
/// `out[c·n .. (c+1)·n]`), and, when `weight` is given, `images`' unfolding times it (`n × m`,
/// row-major).
fn unfold(
    problem: &LayerProblem,
    images: TensorView<'_>,
    rows: usize,
    columns_out: Option<&mut [f64]>,
    times_weight: Option<&mut [f64]>,
) -> Result<()> {
    let d = problem.layout().columns();
    let m = problem.outputs;
    let mut scratch = vec![0.0f32; CHUNK_ROWS * d];
    let mut chunk64 = vec![0.0f64; CHUNK_ROWS * d];
    let (mut cols, mut aw) = (columns_out, times_weight);
    let mut first = 0;
    while first < rows {
        let count = CHUNK_ROWS.min(rows - first);
        let chunk = &mut scratch[..count * d];
        problem.unfolding.unfold_rows(images.data, first, chunk);
        if let Some(cols) = cols.as_deref_mut() {
            for (r, row) in chunk.chunks_exact(d).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    cols[c * rows + first + r] = v as f64;
                }
            }
        }
        if let Some(aw) = aw.as_deref_mut() {
            for (dst, &v) in chunk64.iter_mut().zip(chunk.iter()) {
                *dst = v as f64;
            }
            let product = matmul_f64(&chunk64[..count * d], &problem.weight, count, d, m)?;
            aw[first * m..(first + count) * m].copy_from_slice(&product);
        }
        first += count;
    }
    Ok(())
}

/// Checks inputs and target the way the statistics do; returns the number of unfolded rows.
/// The one check of the data on the data-form path: the `*_checked` functions take its result.
pub(crate) fn check(
    problem: &LayerProblem,
    inputs: &TensorView<'_>,
    target: Option<&TensorView<'_>>,
) -> Result<usize> {
    let n = problem.unfolding.check_batch(inputs, "inputs")?;
    if n == 0 {
        return Err(Error::Shape("inputs hold no images (N = 0)".into()));
    }
    inputs.check_finite("inputs")?;
    if let Some(t) = target {
        if t.shape != inputs.shape {
            return Err(Error::Shape(format!(
                "target has shape {:?}, inputs have {:?}; they must match",
                t.shape, inputs.shape
            )));
        }
        t.check_finite("target")?;
    }
    problem.unfolding.total_rows(n)
}

/// Runs the greedy over all channels in data form. Results match [`crate::run_greedy`] on exact
/// statistics: the same order (ties to the lowest index, zero-gain channels last) and the same
/// error curve, up to rounding.
pub fn run_greedy_data(
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    dependence_tol: f64,
    progress: Progress<'_>,
) -> Result<GreedyRun> {
    let n = check(problem, &inputs, target.as_ref())?;
    run_greedy_data_checked(problem, inputs, target, n, dependence_tol, progress)
}

/// [`run_greedy_data`] on data that [`check`] has passed; `n` is the row count it returned.
pub(crate) fn run_greedy_data_checked(
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    n: usize,
    dependence_tol: f64,
    progress: Progress<'_>,
) -> Result<GreedyRun> {
    check_dependence_tol(dependence_tol)?;
    let layout = problem.layout();
    let (d, ks, m, channels) = (
        layout.columns(),
        layout.columns_per_channel,
        problem.outputs,
        layout.channels,
    );
    // B~ = B at the start (column-major), residual = AW, R = B~ᵀ·AW.
    let mut ortho = vec![0.0f64; n * d];
    let mut residual = vec![0.0f64; n * m];
    unfold(
        problem,
        inputs,
        n,
        Some(&mut ortho),
        target.is_none().then_some(&mut residual[..]),
    )?;
    if let Some(t) = target {
        unfold(problem, t, n, None, Some(&mut residual))?;
    }
    let total: f64 = residual.iter().map(|v| v * v).sum();
    // ortho is column-major n × D, i.e. row-major D × n: R = ortho · AW.
    let residual_corr = matmul_f64(&ortho, &residual, d, n, m)?;
    let gram_diag: Vec<f64> = ortho
        .par_chunks(n)
        .map(|c| c.iter().map(|v| v * v).sum())
        .collect();
    if !total.is_finite() || residual_corr.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFiniteStatistics {
            tensor: "‖AW‖² or BᵀAW".into(),
            detail: format!("‖AW‖² = {total}"),
            hint: "scale the inputs (and the target) down by one common factor".into(),
        });
    }
    let mut state: Box<dyn GreedyState> = Box::new(DataFormState {
        n,
        ks,
        m,
        dependence_tol,
        ortho,
        residual,
        residual_corr,
        gram_diag,
        selected: vec![false; channels],
        q: vec![0.0f64; n * ks],
        y: vec![0.0f64; ks * m],
    });
    drive(
        std::slice::from_mut(&mut state),
        None,
        channels,
        total,
        "data",
        &mut |done, all| progress(Stage::Greedy, done, all),
    )
}

/// The data form's greedy state: the orthogonalised columns `B~` (column-major `n × D`), the
/// residual `AW − P_S AW` (`n × m`) and the residual correlation `R = B~ᵀ·residual`.
struct DataFormState {
    n: usize,
    ks: usize,
    m: usize,
    dependence_tol: f64,
    ortho: Vec<f64>,
    residual: Vec<f64>,
    residual_corr: Vec<f64>,
    gram_diag: Vec<f64>,
    selected: Vec<bool>,
    /// Scratch: the picked block's orthonormal columns (`n × ks`) and `Y = Qᵀ residual`.
    q: Vec<f64>,
    y: Vec<f64>,
}

impl GreedyState for DataFormState {
    fn score(&mut self, gains: &mut [f64]) -> Result<()> {
        // gain(i) = ‖L⁻¹ R[I,:]‖² with L Lᵀ = B~_Iᵀ B~_I, dependent columns dropped.
        let (n, ks, m, tol) = (self.n, self.ks, self.m, self.dependence_tol);
        let (ortho, rc, diag, sel) = (
            &self.ortho,
            &self.residual_corr,
            &self.gram_diag,
            &self.selected,
        );
        gains.par_iter_mut().enumerate().for_each_init(
            || (vec![0.0; ks * ks], vec![0.0; ks * m], vec![false; ks]),
            |(block, rhs, kept), (ch, gain)| {
                if sel[ch] {
                    *gain = 0.0;
                    return;
                }
                let j0 = ch * ks;
                for a in 0..ks {
                    let ca = &ortho[(j0 + a) * n..(j0 + a + 1) * n];
                    for b in 0..=a {
                        let cb = &ortho[(j0 + b) * n..(j0 + b + 1) * n];
                        let v: f64 = ca.iter().zip(cb).map(|(x, y)| x * y).sum();
                        block[a * ks + b] = v;
                        block[b * ks + a] = v;
                    }
                }
                cholesky_dropping(block, ks, &diag[j0..j0 + ks], tol, kept);
                rhs.copy_from_slice(&rc[j0 * m..(j0 + ks) * m]);
                forward_solve(block, ks, kept, rhs, m);
                *gain = rhs.iter().map(|v| v * v).sum();
            },
        );
        Ok(())
    }

    fn select(&mut self, pick: usize) -> Result<()> {
        self.selected[pick] = true;
        let (n, ks, m, tol) = (self.n, self.ks, self.m, self.dependence_tol);
        let (q, y) = (&mut self.q, &mut self.y);
        let (ortho, residual, residual_corr) =
            (&mut self.ortho, &mut self.residual, &mut self.residual_corr);
        // Orthonormalise the picked columns (Gram–Schmidt twice per column, against the block's
        // earlier ones; every column is already orthogonal to the earlier picks), dropping those
        // under the tolerance as the Gram form's Cholesky does.
        let j0 = pick * ks;
        let mut basis = 0;
        for t in 0..ks {
            let (done, rest) = q.split_at_mut(basis * n);
            let col = &mut rest[..n];
            col.copy_from_slice(&ortho[(j0 + t) * n..(j0 + t + 1) * n]);
            for _ in 0..2 {
                for prev in done.chunks_exact(n) {
                    let dot: f64 = prev.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
                    col.iter_mut().zip(prev).for_each(|(c, p)| *c -= dot * p);
                }
            }
            let pivot: f64 = col.iter().map(|v| v * v).sum();
            if pivot > tol * self.gram_diag[j0 + t] && pivot > 0.0 && pivot.is_finite() {
                let inv = 1.0 / pivot.sqrt();
                col.iter_mut().for_each(|v| *v *= inv);
                basis += 1;
            }
        }
        if basis > 0 {
            let q = &q[..basis * n];
            // Y = Qᵀ residual; residual ← residual − Q Y.
            y.fill(0.0);
            for (t, qt) in q.chunks_exact(n).enumerate() {
                for (r, &qv) in qt.iter().enumerate() {
                    let row = &residual[r * m..(r + 1) * m];
                    y[t * m..(t + 1) * m]
                        .iter_mut()
                        .zip(row)
                        .for_each(|(a, b)| *a += qv * b);
                }
            }
            for (t, qt) in q.chunks_exact(n).enumerate() {
                for (r, &qv) in qt.iter().enumerate() {
                    residual[r * m..(r + 1) * m]
                        .iter_mut()
                        .zip(&y[t * m..(t + 1) * m])
                        .for_each(|(a, b)| *a -= qv * b);
                }
            }
            // Every remaining column: v = Qᵀ b~, b~ ← b~ − Q v, R[c,:] ← R[c,:] − vᵀ Y.
            let (sel, y) = (&self.selected, &*y);
            ortho
                .par_chunks_mut(n)
                .zip(residual_corr.par_chunks_mut(m))
                .enumerate()
                .for_each(|(c, (col, rc))| {
                    if sel[c / ks] {
                        return;
                    }
                    for (t, qt) in q.chunks_exact(n).enumerate() {
                        let v: f64 = qt.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
                        if v != 0.0 {
                            col.iter_mut().zip(qt).for_each(|(b, q)| *b -= v * q);
                            rc.iter_mut()
                                .zip(&y[t * m..(t + 1) * m])
                                .for_each(|(r, yy)| *r -= v * yy);
                        }
                    }
                });
        }
        Ok(())
    }
}

/// The new weight rows of the `kept` channels (sorted; rows in that order, `(|S|·ks) × m`) and
/// the relative error they leave, from the data: with `reweight`, the same closest-to-original
/// ridge form as the Gram form ([`mod@super::reweight`]), solved in its dual form
/// `W~_S = W_S + B_Sᵀ (B_S B_Sᵀ + λI)⁻¹ (AW − B_S W_S)` on the `n × n` row Gram matrix (the data
/// form has fewer rows `n` than columns, so memory stays `O(n·(n + |S|·ks))`); without, the
/// original rows. The error is `‖AW − B_S W~_S‖² / ‖AW‖²` computed from the data.
pub fn kept_weights(
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    kept: &[usize],
    reweight: bool,
    ridge: f64,
    dependence_tol: f64,
) -> Result<(Vec<f64>, f64)> {
    let n = check(problem, &inputs, target.as_ref())?;
    kept_weights_checked(
        problem,
        inputs,
        target,
        n,
        kept,
        reweight,
        ridge,
        dependence_tol,
    )
}

/// [`kept_weights`] on data that [`check`] has passed; `n` is the row count it returned.
#[allow(clippy::too_many_arguments)]
pub(crate) fn kept_weights_checked(
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    n: usize,
    kept: &[usize],
    reweight: bool,
    ridge: f64,
    dependence_tol: f64,
) -> Result<(Vec<f64>, f64)> {
    check_ridge(ridge)?;
    check_dependence_tol(dependence_tol)?;
    let layout = problem.layout();
    let (d, ks, m) = (
        layout.columns(),
        layout.columns_per_channel,
        problem.outputs,
    );
    if let Some(&bad) = kept.iter().find(|&&c| c >= layout.channels) {
        return Err(Error::InvalidArgument(format!(
            "channel {bad} is out of range (the layer has {})",
            layout.channels
        )));
    }
    let cols: Vec<usize> = kept.iter().flat_map(|&c| c * ks..(c + 1) * ks).collect();
    let s = cols.len();
    // The kept columns, row-major n × s.
    let mut b_kept = vec![0.0f64; n * s];
    {
        let mut scratch = vec![0.0f32; CHUNK_ROWS * d];
        let mut first = 0;
        while first < n {
            let count = CHUNK_ROWS.min(n - first);
            let chunk = &mut scratch[..count * d];
            problem.unfolding.unfold_rows(inputs.data, first, chunk);
            for (r, row) in chunk.chunks_exact(d).enumerate() {
                for (j, &c) in cols.iter().enumerate() {
                    b_kept[(first + r) * s + j] = row[c] as f64;
                }
            }
            first += count;
        }
    }
    let mut aw = vec![0.0f64; n * m];
    unfold(problem, target.unwrap_or(inputs), n, None, Some(&mut aw))?;
    let total: f64 = aw.iter().map(|v| v * v).sum();
    let mut weight: Vec<f64> = cols
        .iter()
        .flat_map(|&c| problem.weight[c * m..(c + 1) * m].iter().copied())
        .collect();
    // R0 = AW − B_S W_S.
    let fit = matmul_f64(&b_kept, &weight, n, s, m)?;
    let mut residual: Vec<f64> = aw.iter().zip(&fit).map(|(a, f)| a - f).collect();
    if reweight {
        let b_t = transpose(&b_kept, n, s);
        let diag: Vec<f64> = b_t
            .chunks_exact(n)
            .map(|c| c.iter().map(|v| v * v).sum())
            .collect();
        let lambda = ridge_lambda(&diag, ridge, dependence_tol);
        // K = B_S B_Sᵀ + λI; Z = K⁻¹ R0; W~_S = W_S + B_Sᵀ Z; the residual R0 − B_S B_Sᵀ Z.
        let mut k = matmul_f64(&b_kept, &b_t, n, s, n)?;
        for i in 0..n {
            k[i * n + i] += lambda;
        }
        let k_diag: Vec<f64> = (0..n).map(|i| k[i * n + i]).collect();
        let mut ok = vec![false; n];
        let mut z = residual.clone();
        cholesky_dropping(&mut k, n, &k_diag, 0.0, &mut ok);
        forward_solve(&k, n, &ok, &mut z, m);
        backward_solve(&k, n, &ok, &mut z, m);
        let delta = matmul_f64(&b_t, &z, s, n, m)?;
        weight.iter_mut().zip(&delta).for_each(|(w, dl)| *w += dl);
        let change = matmul_f64(&b_kept, &delta, n, s, m)?;
        residual.iter_mut().zip(&change).for_each(|(r, c)| *r -= c);
    }
    let residual2: f64 = residual.iter().map(|v| v * v).sum();
    // Not clamped to 1: the original rows can do worse than keeping nothing.
    let error = if total > 0.0 { residual2 / total } else { 0.0 };
    Ok((weight, error))
}

/// The transpose of a row-major `r × c` matrix.
fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0.0; r * c];
    for (i, row) in a.chunks_exact(c).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * r + i] = v;
        }
    }
    t
}
