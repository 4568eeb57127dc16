//! Before any work: what one layer's selection will cost (rows, flops, bytes), whether it fits in
//! memory, and which form of the greedy will run. Every size here is computed with checked
//! arithmetic from shapes the user gave.

use super::problem::LayerProblem;
use crate::error::{Error, Result};
use crate::units::{available_memory, human_bytes};

/// Which form of the greedy a [`CostPlan`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreedyForm {
    /// The Schur-complement form on the `D × D` Gram statistics (`docs/ALGORITHM.md` §2), on the
    /// chosen backend: memory `O(D²)`, independent of the number of rows.
    Gram,
    /// The data form on the `n × D` unfolded inputs, on the host in f64: residual and
    /// orthogonalised columns instead of the Schur complement. Memory `O(n·D)`; chosen when there
    /// are fewer unfolded rows `n` than columns `D`.
    Data,
}

impl GreedyForm {
    /// A short description for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            GreedyForm::Gram => "Gram form (D × D statistics)",
            GreedyForm::Data => "data form (n × D unfolded inputs, host f64)",
        }
    }
}

/// The cost of selecting channels for one layer, known before any work is done.
#[derive(Clone, Debug, PartialEq)]
pub struct CostPlan {
    /// Images `N`.
    pub images: usize,
    /// Unfolded rows `n` (images × output positions).
    pub rows: usize,
    /// Columns `D`.
    pub columns: usize,
    /// Consumer outputs `m`.
    pub outputs: usize,
    /// Whether a separate target `A` is given.
    pub with_target: bool,
    /// The greedy form that runs.
    pub form: GreedyForm,
    /// Floating-point operations of the statistics (0 in the data form, which has none).
    pub stats_flops: f64,
    /// Floating-point operations of the greedy and the final solve.
    pub greedy_flops: f64,
    /// Peak memory of the statistics and the greedy state, in bytes (an estimate, without the
    /// input tensors themselves). For the GPU backend, device memory is about the same and the
    /// host holds less; the estimate is then an upper bound for the host.
    pub memory_bytes: u64,
}

/// Unfolded rows per chunk of the CPU statistics' conv scratch (as in the CPU backend).
const CHUNK_ROWS: u64 = 2048;

impl CostPlan {
    /// The plan for `problem` on `images` images, with or without a separate target, keeping
    /// `kept` channels. Fails when there are no images or a size overflows. The form is chosen by
    /// [`CostPlan::choose_form`].
    pub fn new(
        problem: &LayerProblem,
        images: usize,
        with_target: bool,
        kept: usize,
    ) -> Result<Self> {
        if images == 0 {
            return Err(Error::Shape("inputs hold no images (N = 0)".into()));
        }
        let rows = problem.unfolding.total_rows(images)?;
        let layout = problem.layout();
        let columns = layout.columns();
        let outputs = problem.outputs;
        let form = Self::choose_form(rows, columns);
        let (n, d, m, ks) = (
            rows as f64,
            columns as f64,
            outputs as f64,
            layout.columns_per_channel as f64,
        );
        let (stats_flops, greedy_flops) = match form {
            // SYRK BᵀB (half of a GEMM), plus BᵀA and AᵀA with a target; the downdates sum to
            // about D³/3, the residual correlation updates to D²·m.
            GreedyForm::Gram => (
                n * d * d * if with_target { 4.0 } else { 1.0 } + 2.0 * d * d * m,
                d * d * d / 3.0 + 2.0 * d * d * m,
            ),
            // C0 = Bᵀ(AW) and AW; per step a rank-ks projection of the remaining columns and
            // their diagonal blocks: about 2·n·D² over the run, plus the residual updates.
            GreedyForm::Data => (
                0.0,
                2.0 * n * d * m * if with_target { 2.0 } else { 1.0 }
                    + 2.0 * n * d * d
                    + n * d * ks
                    + 2.0 * d * d * m / ks.max(1.0),
            ),
        };
        let kept_columns = kept
            .min(layout.channels)
            .saturating_mul(layout.columns_per_channel);
        let memory_bytes = Self::memory(form, rows, columns, outputs, kept_columns, with_target)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the statistics of {columns} columns are too large for this machine"
                ))
            })?;
        Ok(Self {
            images,
            rows,
            columns,
            outputs,
            with_target,
            form,
            stats_flops,
            greedy_flops,
            memory_bytes,
        })
    }

    /// The data form when there are fewer unfolded rows than columns (its state is `n × D`
    /// instead of `D × D`), else the Gram form.
    pub fn choose_form(rows: usize, columns: usize) -> GreedyForm {
        if rows < columns {
            GreedyForm::Data
        } else {
            GreedyForm::Gram
        }
    }

    /// Peak bytes of a form's working state (`None` when the count overflows).
    pub fn memory(
        form: GreedyForm,
        rows: usize,
        columns: usize,
        outputs: usize,
        kept_columns: usize,
        with_target: bool,
    ) -> Option<u64> {
        let (n, d, m, s) = (
            rows as u64,
            columns as u64,
            outputs as u64,
            kept_columns as u64,
        );
        let dd = d.checked_mul(d)?;
        let dm = d.checked_mul(m)?;
        match form {
            GreedyForm::Gram => {
                // Statistics: every Gram sum holds f32 partial sums and an f64 total (12 bytes an
                // entry), one sum without a target, three with one. Greedy: the statistics' G
                // (8 bytes an entry) stay alive next to the Schur complement and its compacted
                // successor (16 bytes). C0, W, R and the scratch are O(D·m).
                let sums = if with_target { 3 } else { 1 };
                let stats = dd.checked_mul(12 * sums)?;
                let greedy = dd.checked_mul(24)?;
                let small = dm
                    .checked_mul(8 * 4)?
                    .checked_add(s.checked_mul(s)?.checked_mul(8)?)?
                    .checked_add(CHUNK_ROWS.checked_mul(d)?.checked_mul(8)?)?
                    .checked_add(d.checked_mul(128 * 8)?)?;
                stats.max(greedy).checked_add(small)
            }
            GreedyForm::Data => {
                // The orthogonalised columns (n × D, f64), the residual correlation and W (D × m),
                // AW (n × m); then, for the reweighting, the kept columns (n × s) and their
                // orthonormal basis (n × at most n), the triangular factor and AW again.
                let nd = n.checked_mul(d)?.checked_mul(8)?;
                let greedy = nd
                    .checked_add(dm.checked_mul(8 * 3)?)?
                    .checked_add(n.checked_mul(m)?.checked_mul(8 * 2)?)?;
                let basis = n.min(s);
                let solve = n
                    .checked_mul(s)?
                    .checked_add(n.checked_mul(basis)?)?
                    .checked_add(basis.checked_mul(basis)?)?
                    .checked_add(s.checked_mul(m)?.checked_mul(2)?)?
                    .checked_add(n.checked_mul(m)?)?
                    .checked_mul(8)?
                    .checked_add(dm.checked_mul(8 * 2)?)?;
                Some(greedy.max(solve))
            }
        }
    }

    /// Fails with [`Error::Memory`] when the plan needs more than `limit` bytes, or, without a
    /// limit, more than the memory available to this process ([`available_memory`]).
    pub fn check_memory(&self, limit: Option<u64>) -> Result<()> {
        let (available, source_note) = match limit {
            Some(l) => (l, " (the memory limit given)".to_string()),
            None => match available_memory() {
                Some(a) => (a, " (free memory of this machine or process)".to_string()),
                None => return Ok(()),
            },
        };
        if self.memory_bytes > available {
            let hint = match self.form {
                GreedyForm::Gram => {
                    "; the Gram form's memory grows as D² (D = columns of the unfolded input): \
                     fewer channels per layer, or a machine with more memory"
                }
                GreedyForm::Data => {
                    "; the data form's memory grows as n·D: fewer calibration images, or a \
                     machine with more memory"
                }
            };
            return Err(Error::Memory {
                what: format!(
                    "the greedy in {} for {} rows × {} columns",
                    self.form.describe(),
                    self.rows,
                    self.columns
                ),
                needed: self.memory_bytes,
                available,
                source_note: format!("{source_note}{hint}"),
            });
        }
        Ok(())
    }

    /// One line: rows, columns, flops and memory.
    pub fn summary(&self) -> String {
        format!(
            "plan: {} images, {} unfolded rows × {} columns, {} outputs; greedy in {}; \
             about {:.3} GFLOP of statistics, {:.3} GFLOP of greedy, {} of memory",
            self.images,
            self.rows,
            self.columns,
            self.outputs,
            self.form.describe(),
            self.stats_flops / 1e9,
            self.greedy_flops / 1e9,
            human_bytes(self.memory_bytes)
        )
    }
}
