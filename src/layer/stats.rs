//! The Gram statistics of one layer problem (`docs/ALGORITHM.md` §2): what the greedy needs and
//! nothing that grows with the number of images: `gram = BᵀB`, `c0 = (BᵀA)·W` and
//! `total = ‖AW‖²`, as the backends return them ([`RawGrams`]) and combined with the consumer
//! weight ([`LayerStats`]); and where the time of the statistics went ([`StatsPhases`]).

use std::sync::{Arc, OnceLock};

use super::problem::LayerProblem;
use super::unfolding::ChannelLayout;
use crate::error::{Error, Result};

/// A matrix that a backend left on its device (the GPU backend's `G` and `C0`), read back only
/// as far as the host needs it.
pub(crate) trait DeviceMatrix: Send + Sync {
    /// Rows `rows` (all of each row's values), in the order given, as f64.
    fn read_rows(&self, rows: &[usize]) -> Result<Vec<f64>>;
    /// For the backend that made the matrix: recognise its own (e.g. to copy it on the device).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A row-major `rows × cols` f64 matrix of the statistics, in host memory or left on the GPU
/// that computed it (f32 there): the Gram matrix `G` inside [`Gram`], and `C0 = (BᵀA)·W`
/// ([`LayerStats::c0`]).
///
/// The GPU backend keeps both on the device: its greedy copies them there without a round trip
/// through the host, and the host reads back only the rows it uses ([`StatsMatrix::rows_of`]:
/// the kept channels' rows for the reweighting). [`StatsMatrix::values`] reads the whole matrix
/// back on first use and keeps the copy; [`StatsMatrix::release_device`] does that and frees the
/// device memory (for statistics held long, e.g. one per layer of a network). Clones share the
/// host copy and the device buffer.
#[derive(Clone)]
pub struct StatsMatrix {
    rows: usize,
    cols: usize,
    host: Arc<OnceLock<Vec<f64>>>,
    device: Option<Arc<dyn DeviceMatrix>>,
    /// The device checked every entry finite.
    checked_finite: bool,
}

impl StatsMatrix {
    /// A matrix in host memory, row-major with `cols` columns (a length that is not a multiple
    /// of `cols` is refused where the matrix is used, e.g. by [`LayerStats::from_raw`]).
    pub fn from_host(values: Vec<f64>, cols: usize) -> Self {
        Self {
            rows: values.len().checked_div(cols).unwrap_or(0),
            cols,
            host: Arc::new(OnceLock::from(values)),
            device: None,
            checked_finite: false,
        }
    }

    /// A `rows × cols` matrix on a device; `finite`: the device found every entry finite.
    pub(crate) fn on_device(
        rows: usize,
        cols: usize,
        matrix: Arc<dyn DeviceMatrix>,
        finite: bool,
    ) -> Self {
        Self {
            rows,
            cols,
            host: Arc::new(OnceLock::new()),
            device: Some(matrix),
            checked_finite: finite,
        }
    }

    /// Columns (values per row).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Entries: `rows · cols`, or the length of the host vector it was made from.
    pub fn len(&self) -> usize {
        match self.host.get() {
            Some(v) => v.len(),
            None => self.rows * self.cols,
        }
    }

    /// Whether the matrix has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the matrix (still) lives on a device.
    pub fn is_on_device(&self) -> bool {
        self.device.is_some()
    }

    /// The host copy, when there is one (no readback).
    pub fn host_values(&self) -> Option<&[f64]> {
        self.host.get().map(Vec::as_slice)
    }

    /// All entries, row-major; a matrix on a device is read back on the first call and the copy
    /// kept.
    pub fn values(&self) -> Result<&[f64]> {
        if let Some(v) = self.host.get() {
            return Ok(v);
        }
        let rows: Vec<usize> = (0..self.rows).collect();
        let values = self.device()?.read_rows(&rows)?;
        Ok(self.host.get_or_init(|| values))
    }

    /// Rows `idx` in the order given (`idx.len() · cols` values): from the host copy when there
    /// is one, else only those rows are read back from the device.
    pub fn rows_of(&self, idx: &[usize]) -> Result<Vec<f64>> {
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.rows) {
            return Err(Error::InvalidArgument(format!(
                "row {bad} of a statistics matrix is out of range ({} rows)",
                self.rows
            )));
        }
        let c = self.cols;
        match self.host.get() {
            Some(v) => Ok(idx
                .iter()
                .flat_map(|&i| v[i * c..(i + 1) * c].iter().copied())
                .collect()),
            None => self.device()?.read_rows(idx),
        }
    }

    /// Reads the matrix back if it is on a device, and frees the device copy.
    pub fn release_device(&mut self) -> Result<()> {
        self.values()?;
        self.device = None;
        Ok(())
    }

    /// The device copy, for the backend that made it.
    pub(crate) fn device_matrix(&self) -> Option<&dyn DeviceMatrix> {
        self.device.as_deref()
    }

    /// Whether the device that made the matrix found every entry finite.
    pub(crate) fn checked_finite(&self) -> bool {
        self.checked_finite
    }

    fn device(&self) -> Result<&dyn DeviceMatrix> {
        self.device.as_deref().ok_or_else(|| {
            Error::Shape("a statistics matrix with neither a host copy nor a device copy".into())
        })
    }
}

impl std::fmt::Debug for StatsMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("on_host", &self.host.get().is_some())
            .field("on_device", &self.device.is_some())
            .finish()
    }
}

/// The Gram matrix `G = BᵀB` (`D × D`, row-major): a square [`StatsMatrix`], in host memory or
/// left on the GPU that computed it, with its diagonal.
///
/// The GPU backend keeps `G` on the device (`D² · 4` bytes, f32): its greedy copies it there
/// without a round trip through the host, and the host reads back only what it uses, i.e.
/// `G[S,S]` for the reweighting ([`Gram::submatrix`]) and the diagonal (returned with the
/// statistics).
#[derive(Clone)]
pub struct Gram {
    matrix: StatsMatrix,
    /// The diagonal, when the matrix was made on a device.
    diag: Vec<f64>,
}

impl Gram {
    /// A matrix in host memory, row-major (`dim` is the square root of the length; a length
    /// that is not a square is refused where the matrix is used, e.g. by
    /// [`LayerStats::from_raw`]).
    pub fn from_host(values: Vec<f64>) -> Self {
        let dim = values.len().isqrt();
        Self {
            matrix: StatsMatrix::from_host(values, dim),
            diag: Vec::new(),
        }
    }

    /// A square matrix left on a device, with its diagonal already on the host.
    pub(crate) fn on_device(matrix: StatsMatrix, diag: Vec<f64>) -> Self {
        debug_assert!(matrix.is_on_device() && matrix.rows == matrix.cols);
        Self { matrix, diag }
    }

    /// `D`.
    pub fn dim(&self) -> usize {
        self.matrix.cols
    }

    /// Entries: `D²`, or the length of the host vector it was made from.
    pub fn len(&self) -> usize {
        self.matrix.len()
    }

    /// Whether the matrix has no entries (`D = 0`).
    pub fn is_empty(&self) -> bool {
        self.matrix.is_empty()
    }

    /// Whether the matrix (still) lives on a device.
    pub fn is_on_device(&self) -> bool {
        self.matrix.is_on_device()
    }

    /// The host copy, when there is one (no readback).
    pub fn host_values(&self) -> Option<&[f64]> {
        self.matrix.host_values()
    }

    /// All entries, row-major; a matrix on a device is read back on the first call and the copy
    /// kept.
    pub fn values(&self) -> Result<&[f64]> {
        self.matrix.values()
    }

    /// The diagonal `G[i,i]`.
    pub fn diag(&self) -> Vec<f64> {
        let d = self.dim();
        match self.matrix.host_values() {
            Some(v) => (0..d).map(|i| v[i * d + i]).collect(),
            None => self.diag.clone(),
        }
    }

    /// `G[idx, idx]`, `idx.len()²` entries row-major. From the host copy when there is one,
    /// else only the rows `idx` are read back from the device.
    pub fn submatrix(&self, idx: &[usize]) -> Result<Vec<f64>> {
        let d = self.dim();
        if let Some(&bad) = idx.iter().find(|&&i| i >= d) {
            return Err(Error::InvalidArgument(format!(
                "Gram matrix index {bad} is out of range (D = {d})"
            )));
        }
        let n = idx.len();
        let mut out = vec![0.0; n * n];
        // From the host copy in place (no copy of the rows); else only rows `idx` come back.
        let fetched;
        let (values, in_place) = match self.matrix.host_values() {
            Some(v) => (v, true),
            None => {
                fetched = self.matrix.rows_of(idx)?;
                (fetched.as_slice(), false)
            }
        };
        for (i, dst) in out.chunks_exact_mut(n.max(1)).enumerate() {
            let r = if in_place { idx[i] } else { i };
            let row = &values[r * d..(r + 1) * d];
            for (t, &j) in dst.iter_mut().zip(idx) {
                *t = row[j];
            }
        }
        Ok(out)
    }

    /// Reads the matrix back if it is on a device, and frees the device copy.
    pub fn release_device(&mut self) -> Result<()> {
        self.matrix.release_device()
    }

    /// The device copy, for the backend that made it.
    pub(crate) fn device_matrix(&self) -> Option<&dyn DeviceMatrix> {
        self.matrix.device_matrix()
    }

    /// Whether the device that made the matrix found every entry finite.
    pub(crate) fn checked_finite(&self) -> bool {
        self.matrix.checked_finite()
    }
}

impl From<Vec<f64>> for Gram {
    fn from(values: Vec<f64>) -> Self {
        Self::from_host(values)
    }
}

impl std::fmt::Debug for Gram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gram")
            .field("dim", &self.dim())
            .field("on_host", &self.matrix.host_values().is_some())
            .field("on_device", &self.matrix.is_on_device())
            .finish()
    }
}

/// Raw second-moment sums of the unfolded inputs `B` and targets `A`, as a backend returns them.
#[derive(Clone, Debug)]
pub struct RawGrams {
    /// `BᵀB`, `D × D` row-major (on the host, or left on the GPU device).
    pub gram: Gram,
    /// `BᵀA`, `D × D` row-major, only when a separate target was given.
    pub cross: Option<Vec<f64>>,
    /// `AᵀA`, `D × D` row-major, only when a separate target was given.
    pub target_gram: Option<Vec<f64>>,
    /// Unfolded rows accumulated (images × output positions).
    pub rows: usize,
    /// `C0 = X·W` (`D × m`, row-major) when the backend computed it next to the sums
    /// ([`crate::backend::StatsAccumulator::finish_with_weight`]; the GPU backend leaves it on
    /// its device); `None`: the host computes it.
    pub c0: Option<StatsMatrix>,
    /// `‖AW‖²` when the backend computed it; `None`: the host computes it.
    pub total: Option<f64>,
    /// Where the time went.
    pub phases: StatsPhases,
}

/// The statistics of one layer problem: everything the greedy and the reweighting need.
#[derive(Clone, Debug)]
pub struct LayerStats {
    /// Channel layout of the unfolded input.
    pub layout: ChannelLayout,
    /// Consumer output channels `m`.
    pub outputs: usize,
    /// `G = BᵀB`, `D × D` row-major: on the host, or left on the GPU that computed it (see
    /// [`Gram`]).
    pub gram: Gram,
    /// `C0 = (BᵀA)·W`, `D × m` row-major: on the host, or left on the GPU that computed it (see
    /// [`StatsMatrix`]).
    pub c0: StatsMatrix,
    /// `‖AW‖²_F`.
    pub total: f64,
    /// The consumer weight `W`, `D × m` row-major (for the no-reweighting error).
    pub weight: Vec<f64>,
    /// Unfolded rows accumulated.
    pub rows: usize,
    /// Where the time of the statistics went (the backend's phases plus the host's share here).
    pub phases: StatsPhases,
}

impl LayerStats {
    /// Combines raw Gram sums with the consumer weight: `C0 = X·W` (or `G·W`), `‖AW‖² =
    /// trace(Wᵀ (AᵀA) W)`, computed on the host in f64 unless the backend already did.
    pub fn from_raw(problem: &LayerProblem, raw: RawGrams) -> Result<Self> {
        let start = std::time::Instant::now();
        let layout = problem.layout();
        let d = layout.columns();
        let m = problem.outputs;
        if raw.gram.len() != d * d {
            return Err(Error::Shape(format!(
                "gram has {} entries, expected {d}×{d}",
                raw.gram.len()
            )));
        }
        // Finite inputs can still overflow the f32 sums (values around 1e19 and up): every
        // infinite pivot would then look like a dependent channel and the run would report an
        // error of 0. Checked here, where every backend's sums arrive (a matrix left on the
        // device was scanned there; it is read back only to name the entry).
        if !raw.gram.checked_finite() {
            check_finite_matrix("BᵀB (the Gram matrix of the inputs)", raw.gram.values()?, d)?;
        }
        if let Some(x) = &raw.cross {
            check_finite_matrix("BᵀA (inputs × target)", x, d)?;
        }
        if let Some(h) = &raw.target_gram {
            check_finite_matrix("AᵀA (the Gram matrix of the target)", h, d)?;
        }
        let w = &problem.weight;
        let c0 = match raw.c0 {
            Some(c0) if c0.len() == d * m && c0.cols() == m => c0,
            Some(c0) => {
                return Err(Error::Shape(format!(
                    "C0 has {} entries, expected {d}×{m}",
                    c0.len()
                )))
            }
            None => {
                let x = match raw.cross.as_deref() {
                    Some(x) => x,
                    None => raw.gram.values()?,
                };
                StatsMatrix::from_host(matmul_f64(x, w, d, d, m)?, m)
            }
        };
        let total = match (raw.total, &raw.target_gram) {
            (Some(total), _) => total,
            (None, None) => dot(c0.values()?, w),
            (None, Some(h)) => dot(&matmul_f64(h, w, d, d, m)?, w),
        };
        if !c0.checked_finite() {
            check_finite_matrix("C0 = BᵀA·W", c0.values()?, m)?;
        }
        if !total.is_finite() {
            return Err(Error::NonFiniteStatistics {
                tensor: "‖AW‖²".into(),
                detail: format!("it is {total}"),
                hint: SCALE_HINT.into(),
            });
        }
        let (gram, c0) = if problem.groups > 1 {
            block_diagonal(
                raw.gram.values()?,
                c0.values()?.to_vec(),
                d,
                m,
                problem.groups,
            )?
        } else {
            (raw.gram, c0)
        };
        let mut phases = raw.phases;
        phases.host += start.elapsed().as_secs_f64();
        Ok(Self {
            layout,
            outputs: m,
            gram,
            c0,
            total,
            weight: w.clone(),
            rows: raw.rows,
            phases,
        })
    }
}

impl LayerStats {
    /// Reads `G` and `C0` back if they are on a device and frees the device copies (for
    /// statistics held long, e.g. one per layer of a network).
    pub fn release_device(&mut self) -> Result<()> {
        self.gram.release_device()?;
        self.c0.release_device()
    }

    /// The same statistics with the columns rearranged: regrouped column `i` is column
    /// `columns[i]` of these (`None`: a zero column), in `layout` (whose `columns()` is
    /// `columns.len()`). A consumer that reads a group's channels out of order, or several
    /// positions per channel, or only some of them, is seen this way as one column block per
    /// group channel. `‖AW‖²` is unchanged: every column of the consumer appears once.
    pub fn regroup(&self, columns: &[Option<usize>], layout: ChannelLayout) -> Result<Self> {
        let d = self.layout.columns();
        let m = self.outputs;
        if layout.columns() != columns.len() || columns.iter().flatten().any(|&c| c >= d) {
            return Err(Error::Shape(format!(
                "regrouping {d} columns into {} ({} × {})",
                columns.len(),
                layout.channels,
                layout.columns_per_channel
            )));
        }
        let g = self.gram.values()?;
        let c0_all = self.c0.values()?;
        let n = columns.len();
        let mut gram = vec![0.0; n * n];
        let mut c0 = vec![0.0; n * m];
        let mut weight = vec![0.0; n * m];
        for (i, ci) in columns.iter().enumerate() {
            let Some(ci) = *ci else { continue };
            for (j, cj) in columns.iter().enumerate() {
                if let Some(cj) = *cj {
                    gram[i * n + j] = g[ci * d + cj];
                }
            }
            c0[i * m..(i + 1) * m].copy_from_slice(&c0_all[ci * m..(ci + 1) * m]);
            weight[i * m..(i + 1) * m].copy_from_slice(&self.weight[ci * m..(ci + 1) * m]);
        }
        Ok(Self {
            layout,
            outputs: m,
            gram: Gram::from_host(gram),
            c0: StatsMatrix::from_host(c0, m),
            total: self.total,
            weight,
            rows: self.rows,
            phases: self.phases,
        })
    }
}

/// The statistics of a grouped consumer with a block-diagonal weight `W` (input block `b`,
/// `D/groups` columns, feeds output block `b`, `m/groups` outputs): the objective
/// `‖BW − B_S W~‖²` over block-diagonal `W~` splits into one problem per block, which reads
/// only `G`'s diagonal blocks `B_bᵀB_b` and `C0`'s entries of input block `b` × output block
/// `b`. With the others zeroed the greedy's gains and the least-squares solve are those of the
/// blocks, and the solution is block-diagonal. `‖AW‖²` is unchanged (`W`'s columns of block `b`
/// vanish outside input block `b`); so is the asymmetric form, `C0 = (BᵀA)·W` masked alike.
fn block_diagonal(
    gram: &[f64],
    mut c0: Vec<f64>,
    d: usize,
    m: usize,
    groups: usize,
) -> Result<(Gram, StatsMatrix)> {
    if !d.is_multiple_of(groups) || !m.is_multiple_of(groups) {
        return Err(Error::Shape(format!(
            "a grouped consumer (group {groups}) with {d} input columns and {m} outputs"
        )));
    }
    let (din, dout) = (d / groups, m / groups);
    let mut masked = vec![0.0; d * d];
    for i in 0..d {
        let b = i / din;
        masked[i * d + b * din..i * d + (b + 1) * din]
            .copy_from_slice(&gram[i * d + b * din..i * d + (b + 1) * din]);
        for (o, x) in c0[i * m..(i + 1) * m].iter_mut().enumerate() {
            if o / dout != b {
                *x = 0.0;
            }
        }
    }
    Ok((Gram::from_host(masked), StatsMatrix::from_host(c0, m)))
}

/// What to do when the statistics overflow.
const SCALE_HINT: &str = "the input values are too large for the f32 sums of their products: \
    scale the inputs (and the target) down by one common factor, e.g. divide them by 1e10; \
    that changes neither the selection nor the reweighted weights";

/// Fails with [`Error::NonFiniteStatistics`] naming `name` and the first non-finite entry of the
/// row-major matrix `a` with `cols` columns.
fn check_finite_matrix(name: &str, a: &[f64], cols: usize) -> Result<()> {
    match crate::validate::first_non_finite(a) {
        None => Ok(()),
        Some(i) => Err(Error::NonFiniteStatistics {
            tensor: name.into(),
            detail: format!("entry ({}, {}) is {}", i / cols, i % cols, a[i]),
            hint: SCALE_HINT.into(),
        }),
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `a (r × k) · b (k × c)`, row-major f64, on all of rayon's threads.
pub(crate) fn matmul_f64(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Result<Vec<f64>> {
    use crate::linalg::gemm::{gemm, MatMut, MatRef, Par};
    let mut out = vec![0.0; r * c];
    gemm(
        MatMut::row_major(&mut out, r, c)?,
        false,
        MatRef::row_major(a, r, k)?,
        MatRef::row_major(b, k, c)?,
        1.0,
        Par::all(),
    )?;
    Ok(out)
}

/// How a backend's kernel times were measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelClock {
    /// GPU timestamp queries around each pass (`Features::TIMESTAMP_QUERY`).
    Timestamps,
    /// Host wall-clock time (submission to completion, or the CPU's own computation).
    #[default]
    WallClock,
}

impl KernelClock {
    /// A short label for tables: `timestamps` or `wall-clock`.
    pub fn label(self) -> &'static str {
        match self {
            KernelClock::Timestamps => "timestamps",
            KernelClock::WallClock => "wall-clock",
        }
    }
}

/// Where the time of one layer's statistics went, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatsPhases {
    /// Setting the accumulator up (buffers, tables, clearing the sums) and checking the
    /// inputs.
    pub setup: f64,
    /// Preparing and queueing the batches for the device (f16 conversion, staging copies); 0 on
    /// the CPU, which reads the batches in place.
    pub upload: f64,
    /// The Gram kernels (`BᵀB`, and `AᵀB`, `AᵀA` with a target).
    pub kernel: f64,
    /// Device-side work after the kernels: adding the row splits, the full f32 matrices, and
    /// `C0 = X·W`, `(AᵀA)·W` when computed on the device.
    pub reduce: f64,
    /// Device → host copies of the results.
    pub readback: f64,
    /// Host work: conversion to f64 and mirroring, and `C0`, `‖AW‖²` when computed on the host.
    pub host: f64,
    /// How `kernel` and `reduce` were measured.
    pub clock: KernelClock,
    /// Bytes of inputs and targets sent from the host to the device (0 on the CPU).
    pub uploaded_bytes: u64,
    /// Bytes of inputs copied from device-resident activations on the device itself (tapped
    /// activations of the GPU executor on the same device: no host round trip).
    pub device_bytes: u64,
    /// Row splits (split-K slices) of the largest Gram kernel dispatch; 0 on the CPU, which
    /// does not split.
    pub row_splits: u32,
    /// Multiply-adds of the sums over the unfolded rows (a symmetric `D × D` sum counts
    /// `D(D+1)/2` per row; the target's projection `A·W` `D·m`), not the products at the end.
    pub multiply_adds: u64,
}

impl StatsPhases {
    /// The sum of the phases.
    pub fn total(&self) -> f64 {
        self.setup + self.upload + self.kernel + self.reduce + self.readback + self.host
    }
}
