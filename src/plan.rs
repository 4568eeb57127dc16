//! Before any work: what one layer's selection will cost (rows, flops, bytes), whether it fits in
//! memory, and which form of the greedy will run. Every size here is computed with checked
//! arithmetic from shapes the user gave.

use crate::error::{Error, Result};
use crate::stats::LayerProblem;

/// Which form of the greedy a [`Plan`] runs.
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
pub struct Plan {
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

impl Plan {
    /// The plan for `problem` on `images` images, with or without a separate target, keeping
    /// `kept` channels. Fails when there are no images or a size overflows. The form is chosen by
    /// [`Plan::choose_form`].
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

    /// Peak bytes of a form's working state.
    fn memory(
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

/// Memory this process can still allocate, in bytes: the least of the machine's available memory
/// (`MemAvailable`), the cgroup's remaining limit and the address-space limit (`ulimit -v`) less
/// what is mapped already. `None` where none of these can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mem_available = meminfo
        .as_deref()
        .and_then(|text| kib_field(text, "MemAvailable:"));
    let cgroup = (|| {
        let max = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
        let max: u64 = max.trim().parse().ok()?; // "max" means no limit
        let current: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(max.saturating_sub(current))
    })();
    let address_space = (|| {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max address space"))?;
        let soft: u64 = line
            .trim_start_matches("Max address space")
            .split_whitespace()
            .next()?
            .parse()
            .ok()?; // "unlimited" does not parse
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let mapped = kib_field(&status, "VmSize:")?;
        Some(soft.saturating_sub(mapped))
    })();
    [mem_available, cgroup, address_space]
        .into_iter()
        .flatten()
        .min()
}

/// The value of a `Key:   123 kB` line, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `1536` → `1.5 KiB`, and so on up to TiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a byte count: a number with an optional unit `K`, `M`, `G`, `T` (powers of 1024; `KiB`,
/// `MB` and so on are read the same way), e.g. `512M`, `1.5G`, `2000000`.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        Error::InvalidArgument(format!(
            "memory size {text:?}: expected a number with an optional unit K, M, G or T, e.g. 8G"
        ))
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let scale = match unit.trim_end_matches('B').trim_end_matches('I') {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_byte_counts() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("2K").unwrap(), 2048);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("3mb").unwrap(), 3 << 20);
        for bad in ["", "x", "5Q", "-1", "0"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn available_memory_is_plausible_on_linux() {
        if cfg!(target_os = "linux") {
            let a = available_memory().expect("readable on Linux");
            assert!(a > 1 << 20, "{a}");
        }
    }
}
