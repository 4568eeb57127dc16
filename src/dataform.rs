//! The greedy in data form (`docs/ALGORITHM.md` §3), for layers with fewer unfolded rows `n` than
//! columns `D`: the state is the `n × D` matrix of orthogonalised columns `B~ = (I − P_S) B`
//! instead of the `D × D` Schur complement `E = B~ᵀB~`, so memory is `O(n·D)` instead of `O(D²)`.
//! Same gains, same tie-breaking, same dependence rule as the Gram form; f64 on the host.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::greedy::{normalized_error, pick_channel, GreedyRun, Progress, Stage};
use crate::linalg::{cholesky_dropping, forward_solve};
use crate::stats::{matmul_f64, LayerProblem};
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
    if !(0.0..1.0).contains(&dependence_tol) {
        return Err(Error::InvalidArgument(format!(
            "dependence tolerance {dependence_tol} must be in [0, 1)"
        )));
    }
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
    let mut residual_corr = matmul_f64(&ortho, &residual, d, n, m)?;
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
    let mut run = GreedyRun {
        order: Vec::with_capacity(channels),
        gains: Vec::with_capacity(channels),
        error_curve: Vec::with_capacity(channels),
        total,
    };
    let mut selected = vec![false; channels];
    let mut gains = vec![0.0; channels];
    let mut explained = 0.0;
    let mut q = vec![0.0f64; n * ks];
    let mut y = vec![0.0f64; ks * m];
    for step in 0..channels {
        // Score: gain(i) = ‖L⁻¹ R[I,:]‖² with L Lᵀ = B~_Iᵀ B~_I, dependent columns dropped.
        {
            let (ortho, rc, diag, sel) = (&ortho, &residual_corr, &gram_diag, &selected);
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
                    cholesky_dropping(block, ks, &diag[j0..j0 + ks], dependence_tol, kept);
                    rhs.copy_from_slice(&rc[j0 * m..(j0 + ks) * m]);
                    forward_solve(block, ks, kept, rhs, m);
                    *gain = rhs.iter().map(|v| v * v).sum();
                },
            );
        }
        let (pick, best_gain) = pick_channel(&gains, &selected, step, "data")?;
        selected[pick] = true;
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
            if pivot > dependence_tol * gram_diag[j0 + t] && pivot > 0.0 && pivot.is_finite() {
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
            let (sel, y) = (&selected, &y);
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
        explained += best_gain;
        run.order.push(pick);
        run.gains.push(best_gain);
        run.error_curve.push(normalized_error(total, explained));
        progress(Stage::Greedy, step + 1, channels);
    }
    Ok(run)
}

/// The new weight rows of the `kept` channels (sorted; rows in that order, `(|S|·ks) × m`) and
/// the relative error they leave, from the data in `O(n·|S|·ks)` memory: with `reweight`, the
/// least-squares weights by Gram–Schmidt on the kept columns in order, a column under the
/// dependence tolerance getting zero weights (as the Gram form's Cholesky with dropped columns
/// does); without, the original rows and `‖AW − B_S W_S‖² / ‖AW‖²`.
pub fn kept_weights(
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    kept: &[usize],
    reweight: bool,
    dependence_tol: f64,
) -> Result<(Vec<f64>, f64)> {
    let n = check(problem, &inputs, target.as_ref())?;
    kept_weights_checked(problem, inputs, target, n, kept, reweight, dependence_tol)
}

/// [`kept_weights`] on data that [`check`] has passed; `n` is the row count it returned.
pub(crate) fn kept_weights_checked(
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    n: usize,
    kept: &[usize],
    reweight: bool,
    dependence_tol: f64,
) -> Result<(Vec<f64>, f64)> {
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
    // The kept columns, column-major n × s.
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
                    b_kept[j * n + first + r] = row[c] as f64;
                }
            }
            first += count;
        }
    }
    let mut aw = vec![0.0f64; n * m];
    unfold(problem, target.unwrap_or(inputs), n, None, Some(&mut aw))?;
    let total: f64 = aw.iter().map(|v| v * v).sum();
    let relative = |residual2: f64| {
        if total > 0.0 {
            (residual2 / total).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let w_kept: Vec<f64> = cols
        .iter()
        .flat_map(|&c| problem.weight[c * m..(c + 1) * m].iter().copied())
        .collect();
    if !reweight {
        // AW − B_S W_S, row by row.
        let mut residual2 = 0.0;
        let mut row = vec![0.0f64; m];
        for r in 0..n {
            row.copy_from_slice(&aw[r * m..(r + 1) * m]);
            for j in 0..s {
                let b = b_kept[j * n + r];
                if b != 0.0 {
                    row.iter_mut()
                        .zip(&w_kept[j * m..(j + 1) * m])
                        .for_each(|(x, w)| *x -= b * w);
                }
            }
            residual2 += row.iter().map(|v| v * v).sum::<f64>();
        }
        // Not clamped to 1: the original rows can do worse than keeping nothing.
        let error = if total > 0.0 { residual2 / total } else { 0.0 };
        return Ok((w_kept, error));
    }
    // Gram–Schmidt (twice) in kept order: B_k = Q R with R upper triangular on the kept
    // (independent) columns; W~_k = R⁻¹ Qᵀ AW, dropped columns zero.
    let mut q: Vec<f64> = Vec::new(); // column-major n × r
    let mut r_cols: Vec<Vec<f64>> = Vec::new(); // column j of R: coefficients on q_0..q_r
    let mut basis_of: Vec<Option<usize>> = vec![None; s];
    for j in 0..s {
        let col = &b_kept[j * n..(j + 1) * n];
        let reference: f64 = col.iter().map(|v| v * v).sum();
        let mut v = col.to_vec();
        let basis = q.len() / n;
        let mut coef = vec![0.0f64; basis + 1];
        for _ in 0..2 {
            for (i, qi) in q.chunks_exact(n).enumerate() {
                let dot: f64 = qi.iter().zip(&v).map(|(a, b)| a * b).sum();
                coef[i] += dot;
                v.iter_mut().zip(qi).for_each(|(x, y)| *x -= dot * y);
            }
        }
        let pivot: f64 = v.iter().map(|x| x * x).sum();
        if pivot > dependence_tol * reference && pivot > 0.0 && pivot.is_finite() {
            let norm = pivot.sqrt();
            coef[basis] = norm;
            q.extend(v.iter().map(|x| x / norm));
            r_cols.push(coef);
            basis_of[j] = Some(basis);
        }
    }
    let r = q.len() / n;
    // Z = Qᵀ AW (r × m); explained = ‖Z‖².
    let mut z = vec![0.0f64; r * m];
    for (i, qi) in q.chunks_exact(n).enumerate() {
        for (row, &qv) in qi.iter().enumerate() {
            z[i * m..(i + 1) * m]
                .iter_mut()
                .zip(&aw[row * m..(row + 1) * m])
                .for_each(|(a, b)| *a += qv * b);
        }
    }
    let explained: f64 = z.iter().map(|v| v * v).sum();
    // Back substitution R x = Z over the kept columns (r_cols[k] is column k of R).
    let mut x = vec![0.0f64; r * m];
    for k in (0..r).rev() {
        let mut rhs = z[k * m..(k + 1) * m].to_vec();
        for (l, col) in r_cols.iter().enumerate().skip(k + 1) {
            let coef = col[k];
            if coef != 0.0 {
                rhs.iter_mut()
                    .zip(&x[l * m..(l + 1) * m])
                    .for_each(|(a, b)| *a -= coef * b);
            }
        }
        let diag = r_cols[k][k];
        x[k * m..(k + 1) * m]
            .iter_mut()
            .zip(&rhs)
            .for_each(|(a, b)| *a = b / diag);
    }
    let mut weight = vec![0.0f64; s * m];
    for (j, b) in basis_of.iter().enumerate() {
        if let Some(k) = b {
            weight[j * m..(j + 1) * m].copy_from_slice(&x[k * m..(k + 1) * m]);
        }
    }
    Ok((weight, relative(total - explained)))
}
