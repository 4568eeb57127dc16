//! Statistics on the CPU: the Gram sums of the unfolded consumer input, batch by batch.
//!
//! Rows of the unfolded input are produced a chunk at a time, so memory never grows with the
//! number of images: a dense consumer's rows are read in place; a conv consumer's patches are
//! unfolded into a fixed scratch of `chunk_rows(D) × D`, **column by column** (each unfolded column
//! is one input plane shifted by a kernel offset: contiguous copies, where a row-major im2col
//! gathers `D` values a plane apart for every row). The GEMM reads either layout through strides.
//!
//! `BᵀB` is symmetric: only the upper tiles are computed (a SYRK), in parallel over tile pairs.
//! With a target `A` and the consumer weight `W` known up front, `C0 = Bᵀ(A·W)` and `‖AW‖²` are
//! accumulated directly (`2·D·m` multiply-adds per row) instead of `BᵀA` and `AᵀA` (`1.5·D²`).
//! Partial sums are kept in f32 over at most `FLUSH_ROWS` rows, then added into f64, so the
//! error does not grow with the number of images.

use rayon::prelude::*;

use crate::backend::{check_stats_batch, StatsAccumulator, StatsPhases, StatsSpec};
use crate::error::{Error, Result};
use crate::layer::{RawGrams, StatsMatrix, Unfolding};
use crate::linalg::gemm::{gemm, syrk_upper_tiles, MatMut, MatRef, Par, SendPtr};
use crate::tensor::TensorView;

/// Fewest unfolded rows per GEMM call (and per conv-patch scratch fill).
const MIN_CHUNK_ROWS: usize = 2048;
/// Scratch per unfolded chunk: narrow layers get longer chunks (fewer, larger GEMM calls, whose
/// packing and task overheads are paid once per call), up to `FLUSH_ROWS`.
const CHUNK_BYTES: usize = 16 << 20;
/// Rows summed in f32 before the partial sums are added into the f64 accumulator.
const FLUSH_ROWS: usize = 8192;
/// Widest column tile of the blocked SYRK.
const SYRK_TILE: usize = 256;

/// Unfolded rows per chunk for `d` columns: a power of two in `MIN_CHUNK_ROWS ..= FLUSH_ROWS`.
fn chunk_rows(d: usize) -> usize {
    let fit = CHUNK_BYTES / (4 * d.max(1));
    let mut rows = MIN_CHUNK_ROWS;
    while rows * 2 <= fit && rows * 2 <= FLUSH_ROWS {
        rows *= 2;
    }
    rows
}
/// Unfolded columns filled per parallel task.
const UNFOLD_COLUMNS: usize = 8;

/// `dst (+)= aᵀ b`, `dst` row-major `a.cols × b.cols`, on all threads.
fn gemm_at_b(
    dst: &mut [f32],
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    accumulate: bool,
) -> Result<()> {
    let dst = MatMut::row_major(dst, a.shape().1, b.shape().1)?;
    gemm(dst, accumulate, a.t(), b, 1.0, Par::all())
}

/// Upper tiles of `dst (+)= aᵀ a` (`dst` row-major `a.cols × a.cols`; tiles on and above the
/// diagonal; the strictly lower entries of diagonal tiles are computed too and ignored), in
/// parallel over tile pairs.
fn syrk_upper(dst: &mut [f32], a: MatRef<'_, f32>, accumulate: bool) -> Result<()> {
    syrk_upper_tiles(dst, a, syrk_tile(a.shape().1), accumulate)
}

/// Tile size of the blocked SYRK for `d` columns: tiles of equal width (a multiple of 16, at
/// most `SYRK_TILE`), as few as give every thread work (at least `2·threads` tile pairs, while
/// tiles stay 32 wide or more). Each pair packs its two column blocks once per chunk, so wider
/// tiles pay less packing per multiply-add.
fn syrk_tile(d: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let mut t = d.div_ceil(SYRK_TILE).max(1);
    while t * (t + 1) / 2 < 2 * threads && d.div_ceil(t + 1) >= 32 {
        t += 1;
    }
    d.div_ceil(t).next_multiple_of(16).min(SYRK_TILE)
}

/// Unfolds rows `first .. first + rows` of `images` column by column into `out` (`D × rows`),
/// in parallel over blocks of columns.
fn unfold_parallel(
    unfolding: &Unfolding,
    images: &[f32],
    first: usize,
    rows: usize,
    out: &mut [f32],
) {
    out.par_chunks_mut(UNFOLD_COLUMNS * rows)
        .enumerate()
        .for_each(|(block, cols)| {
            let c0 = block * UNFOLD_COLUMNS;
            unfolding.unfold_columns(images, first, rows, c0..c0 + cols.len() / rows, cols)
        });
}

/// Copies the upper triangle of the `d × d` row-major matrix onto the lower one, by tiles (a
/// transposed copy row by row would stride through memory), in parallel over row bands.
fn mirror_upper(a: &mut [f64], d: usize) {
    const T: usize = 64;
    assert_eq!(a.len(), d * d);
    let base = SendPtr(a.as_mut_ptr());
    (0..d.div_ceil(T)).into_par_iter().for_each(|band| {
        let p = base;
        let i0 = band * T;
        let i1 = (i0 + T).min(d);
        for j0 in (0..i1).step_by(T) {
            for i in i0..i1 {
                for j in j0..(j0 + T).min(i) {
                    // SAFETY: in bounds (i, j < d); reads only strictly upper entries (j < i),
                    // which nobody writes here; writes only strictly lower entries of rows
                    // i0..i1, which belong to this band alone.
                    unsafe { *p.0.add(i * d + j) = *p.0.add(j * d + i) };
                }
            }
        }
    });
}

/// One sum `Lᵀ R` being accumulated: f32 partial sums, f64 total (`rows × cols`, row-major).
struct Sum {
    /// Symmetric (`LᵀL`): only the upper triangle is computed; mirrored at the end.
    symmetric: bool,
    cols: usize,
    partial: Vec<f32>,
    total: Vec<f64>,
}

impl Sum {
    fn new(rows: usize, cols: usize, symmetric: bool) -> Self {
        Self {
            symmetric,
            cols,
            partial: vec![0.0; rows * cols],
            total: vec![0.0; rows * cols],
        }
    }

    /// `partial (+)= leftᵀ right` (for a symmetric sum, `right` is `left`).
    fn add(
        &mut self,
        left: MatRef<'_, f32>,
        right: MatRef<'_, f32>,
        accumulate: bool,
    ) -> Result<()> {
        if self.symmetric {
            syrk_upper(&mut self.partial, left, accumulate)
        } else {
            gemm_at_b(&mut self.partial, left, right, accumulate)
        }
    }

    /// Adds the f32 partial sums into the f64 total (for a symmetric sum, the upper triangle
    /// only: the lower one is mirrored once, at the end).
    fn flush(&mut self) {
        let cols = self.cols;
        let symmetric = self.symmetric;
        self.total
            .par_chunks_mut(cols.max(1))
            .zip(self.partial.par_chunks(cols.max(1)))
            .enumerate()
            .for_each(|(i, (t, p))| {
                let from = if symmetric { i } else { 0 };
                for (t, p) in t[from..].iter_mut().zip(&p[from..]) {
                    *t += *p as f64;
                }
            });
    }

    fn into_total(mut self) -> Vec<f64> {
        if self.symmetric {
            mirror_upper(&mut self.total, self.cols);
        }
        self.total
    }
}

/// How the target `A` enters the statistics.
enum TargetSums {
    /// No target (`A = B`): `C0 = G·W` and `‖AW‖²` follow from `G` on the host.
    None,
    /// `BᵀA` and `AᵀA`, `D × D` (the weight is not known yet, or `m` is not small against `D`).
    Gram { cross: Sum, target_gram: Sum },
    /// `C0 = Bᵀ(A·W)` (`D × m`) and `‖AW‖²` directly.
    Projected {
        /// `W` in f32, `D × m` row-major.
        weight: Vec<f32>,
        outputs: usize,
        /// `A·W` of the current chunk, `chunk × m` row-major.
        aw: Vec<f32>,
        c0: Sum,
        /// `‖AW‖²` in f64, summed chunk by chunk in a fixed order.
        total: f64,
    },
}

/// The statistics accumulator of the CPU backend.
pub(super) struct CpuStats {
    unfolding: Unfolding,
    d: usize,
    gram: Sum,
    target: TargetSums,
    rows: usize,
    rows_in_partial: usize,
    scratch_inputs: Vec<f32>,
    scratch_target: Vec<f32>,
    /// Seconds spent in `add_batch` (unfolding and the SYRK/GEMM kernels).
    kernel_seconds: f64,
    /// Multiply-adds of the sums so far ([`StatsPhases::multiply_adds`]).
    multiply_adds: u64,
}

impl CpuStats {
    pub(super) fn new(spec: StatsSpec<'_>) -> Result<Self> {
        let d = spec.unfolding.layout().columns();
        let target = match (spec.with_target, spec.weight) {
            (false, _) => TargetSums::None,
            // Projecting costs 2·D·m per row against 1.5·D² for the two D × D sums.
            (true, Some(w)) if 4 * w.outputs < 3 * d => {
                if w.weight.len() != d * w.outputs {
                    return Err(Error::Shape(format!(
                        "consumer weight has {} entries, expected {d}×{}",
                        w.weight.len(),
                        w.outputs
                    )));
                }
                TargetSums::Projected {
                    weight: w.weight.iter().map(|&x| x as f32).collect(),
                    outputs: w.outputs,
                    aw: vec![0.0; chunk_rows(d) * w.outputs],
                    c0: Sum::new(d, w.outputs, false),
                    total: 0.0,
                }
            }
            (true, _) => TargetSums::Gram {
                cross: Sum::new(d, d, false),
                target_gram: Sum::new(d, d, true),
            },
        };
        let scratch = if spec.unfolding.is_dense() {
            0
        } else {
            chunk_rows(d) * d
        };
        Ok(Self {
            unfolding: spec.unfolding,
            d,
            gram: Sum::new(d, d, true),
            scratch_target: vec![
                0.0;
                if matches!(target, TargetSums::None) {
                    0
                } else {
                    scratch
                }
            ],
            target,
            rows: 0,
            rows_in_partial: 0,
            scratch_inputs: vec![0.0; scratch],
            kernel_seconds: 0.0,
            multiply_adds: 0,
        })
    }

    /// Multiply-adds per unfolded row: `BᵀB`'s upper triangle, and `BᵀA` + `AᵀA` or the
    /// projection `A·W` + `Bᵀ(AW)` + `‖AW‖²`.
    fn row_work(&self) -> u64 {
        let d = self.d as u64;
        d * (d + 1) / 2
            + match &self.target {
                TargetSums::None => 0,
                TargetSums::Gram { .. } => d * d + d * (d + 1) / 2,
                TargetSums::Projected { outputs, .. } => 2 * d * *outputs as u64 + *outputs as u64,
            }
    }

    fn flush(&mut self) {
        if self.rows_in_partial == 0 {
            return;
        }
        self.gram.flush();
        match &mut self.target {
            TargetSums::None => {}
            TargetSums::Gram { cross, target_gram } => {
                cross.flush();
                target_gram.flush();
            }
            TargetSums::Projected { c0, .. } => c0.flush(),
        }
        self.rows_in_partial = 0;
    }
}

/// `Σ x²` in f64 over blocks of a fixed size, added in order (the same on any thread count).
fn sum_squares(x: &[f32]) -> f64 {
    let parts: Vec<f64> = x
        .par_chunks(4096)
        .map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>())
        .collect();
    parts.iter().sum()
}

impl StatsAccumulator for CpuStats {
    fn add_batch(&mut self, inputs: TensorView<'_>, target: Option<TensorView<'_>>) -> Result<()> {
        let with_target = !matches!(self.target, TargetSums::None);
        let n = check_stats_batch(&self.unfolding, with_target, &inputs, target.as_ref())?;
        let start = std::time::Instant::now();
        let d = self.d;
        let total_rows = self.unfolding.total_rows(n)?;
        let mut first = 0;
        while first < total_rows {
            let rows = chunk_rows(d).min(total_rows - first);
            // At most FLUSH_ROWS rows in the f32 partial sums.
            if self.rows_in_partial + rows > FLUSH_ROWS {
                self.flush();
            }
            let accumulate = self.rows_in_partial > 0;
            let (b, a) = if self.unfolding.is_dense() {
                let range = first * d..(first + rows) * d;
                (
                    MatRef::row_major(&inputs.data[range.clone()], rows, d)?,
                    target
                        .as_ref()
                        .map(|t| MatRef::row_major(&t.data[range], rows, d))
                        .transpose()?,
                )
            } else {
                let len = rows * d;
                unfold_parallel(
                    &self.unfolding,
                    inputs.data,
                    first,
                    rows,
                    &mut self.scratch_inputs[..len],
                );
                if let Some(t) = &target {
                    unfold_parallel(
                        &self.unfolding,
                        t.data,
                        first,
                        rows,
                        &mut self.scratch_target[..len],
                    );
                }
                (
                    MatRef::col_major(&self.scratch_inputs[..len], rows, d)?,
                    target
                        .as_ref()
                        .map(|_| MatRef::col_major(&self.scratch_target[..len], rows, d))
                        .transpose()?,
                )
            };
            self.gram.add(b, b, accumulate)?;
            match (&mut self.target, a) {
                (TargetSums::Gram { cross, target_gram }, Some(a)) => {
                    cross.add(b, a, accumulate)?;
                    target_gram.add(a, a, accumulate)?;
                }
                (
                    TargetSums::Projected {
                        weight,
                        outputs,
                        aw,
                        c0,
                        total,
                    },
                    Some(a),
                ) => {
                    let m = *outputs;
                    let aw = &mut aw[..rows * m];
                    // A·W = (Aᵀ)ᵀ W: rows × m.
                    gemm_at_b(aw, a.t(), MatRef::row_major(weight, d, m)?, false)?;
                    *total += sum_squares(aw);
                    c0.add(b, MatRef::row_major(aw, rows, m)?, accumulate)?;
                }
                _ => {}
            }
            self.rows_in_partial += rows;
            self.rows += rows;
            self.multiply_adds += rows as u64 * self.row_work();
            first += rows;
        }
        self.kernel_seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<RawGrams> {
        let start = std::time::Instant::now();
        self.flush();
        let kernel = self.kernel_seconds;
        let gram = self.gram.into_total();
        let (cross, target_gram, c0, total) = match self.target {
            TargetSums::None => (None, None, None, None),
            TargetSums::Gram { cross, target_gram } => (
                Some(cross.into_total()),
                Some(target_gram.into_total()),
                None,
                None,
            ),
            TargetSums::Projected {
                c0, total, outputs, ..
            } => (
                None,
                None,
                Some(StatsMatrix::from_host(c0.into_total(), outputs)),
                Some(total),
            ),
        };
        Ok(RawGrams {
            gram: gram.into(),
            cross,
            target_gram,
            rows: self.rows,
            c0,
            total,
            phases: StatsPhases {
                kernel,
                multiply_adds: self.multiply_adds,
                host: start.elapsed().as_secs_f64(),
                ..StatsPhases::default()
            },
        })
    }

    fn finish_with_weight(self: Box<Self>, weight: &[f64], outputs: usize) -> Result<RawGrams> {
        if let TargetSums::Projected {
            weight: w,
            outputs: m,
            ..
        } = &self.target
        {
            if outputs != *m || weight.len() != w.len() {
                return Err(Error::InvalidArgument(format!(
                    "the statistics were projected on a {}×{m} consumer weight; \
                     finish was given {}×{outputs}",
                    w.len() / (*m).max(1),
                    weight.len() / outputs.max(1)
                )));
            }
        }
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain f64 `aᵀ b` of two row-major matrices with `rows` rows.
    fn at_b(a: &[f32], ac: usize, b: &[f32], bc: usize, rows: usize) -> Vec<f64> {
        let mut out = vec![0.0; ac * bc];
        for r in 0..rows {
            for i in 0..ac {
                for j in 0..bc {
                    out[i * bc + j] += a[r * ac + i] as f64 * b[r * bc + j] as f64;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn strided_products_match_f64_on_awkward_sizes() {
        for (rows, ac, bc) in [(1, 1, 1), (37, 5, 3), (130, 67, 9), (3, 70, 70)] {
            let a = values(rows * ac, 1);
            let b = values(rows * bc, 2);
            let want = at_b(&a, ac, &b, bc, rows);
            // The same matrices stored column after column.
            let transpose = |x: &[f32], cols: usize| -> Vec<f32> {
                (0..cols * rows)
                    .map(|k| x[(k % rows) * cols + k / rows])
                    .collect()
            };
            let (at, bt) = (transpose(&a, ac), transpose(&b, bc));
            for (av, bv) in [
                (
                    MatRef::row_major(&a, rows, ac).unwrap(),
                    MatRef::row_major(&b, rows, bc).unwrap(),
                ),
                (
                    MatRef::col_major(&at, rows, ac).unwrap(),
                    MatRef::col_major(&bt, rows, bc).unwrap(),
                ),
                (
                    MatRef::row_major(&a, rows, ac).unwrap(),
                    MatRef::col_major(&bt, rows, bc).unwrap(),
                ),
            ] {
                let mut got = vec![1.0f32; ac * bc];
                gemm_at_b(&mut got, av, bv, false).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{g} vs {w}"
                    );
                }
                // Accumulating adds the same product once more.
                gemm_at_b(&mut got, av, bv, true).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((*g as f64 - 2.0 * w).abs() <= 2e-4 * (1.0 + w.abs()));
                }
            }
            if ac == bc {
                let mut got = vec![0.0f32; ac * ac];
                syrk_upper(&mut got, MatRef::col_major(&at, rows, ac).unwrap(), false).unwrap();
                let want = at_b(&a, ac, &a, ac, rows);
                for i in 0..ac {
                    for j in i..ac {
                        let (g, w) = (got[i * ac + j] as f64, want[i * ac + j]);
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "({i},{j}) {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
