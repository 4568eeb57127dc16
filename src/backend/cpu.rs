//! The CPU backend: multi-threaded (rayon), blocked f32 GEMM kernels (the `gemm` crate) for the
//! statistics, f64 for the greedy state. It is the baseline every GPU figure is compared with.
//!
//! Statistics: rows of the unfolded input are produced a chunk at a time (a copy for dense
//! consumers is avoided altogether; a conv consumer's patches are unfolded into a fixed scratch of
//! `CHUNK_ROWS × D`), so memory never grows with the number of images. `BᵀB` is symmetric: only
//! the upper tiles are computed (a SYRK), in parallel over tile pairs. Partial sums are kept in
//! f32 over at most `FLUSH_ROWS` rows, then added into f64.
//!
//! Greedy: `E` is kept in f64, upper triangle only; each step is one rank-`ks` downdate of the
//! rows of the channels still in play, parallel over rows.

use rayon::prelude::*;

use super::{Backend, GreedySpec, GreedyState, StatsAccumulator, StatsSpec};
use crate::error::{Error, Result};
use crate::linalg::{cholesky_dropping, forward_solve};
use crate::stats::{ChannelLayout, RawGrams, Unfolding};
use crate::tensor::TensorView;

/// Unfolded rows per GEMM call (and per conv-patch scratch fill).
const CHUNK_ROWS: usize = 1024;
/// Rows summed in f32 before the partial sums are added into the f64 accumulator.
const FLUSH_ROWS: usize = 8192;
/// Column tile of the blocked SYRK.
const SYRK_TILE: usize = 192;

/// The `gemm` crate's parallelism on rayon's global pool.
pub(crate) fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// The CPU backend. Uses rayon's global thread pool (set `RAYON_NUM_THREADS` to limit it).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend on all cores.
    pub fn new() -> Self {
        Self
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn stats_accumulator(&self, spec: StatsSpec) -> Result<Box<dyn StatsAccumulator + '_>> {
        Ok(Box::new(CpuStats::new(spec)))
    }

    fn greedy_state(&self, spec: GreedySpec<'_>) -> Result<Box<dyn GreedyState + '_>> {
        Ok(Box::new(CpuGreedy::new(spec)?))
    }
}

/// One Gram sum `Lᵀ R` being accumulated: f32 partial sums, f64 total.
struct GramSum {
    symmetric: bool,
    partial: Vec<f32>,
    total: Vec<f64>,
}

impl GramSum {
    fn new(d: usize, symmetric: bool) -> Self {
        Self {
            symmetric,
            partial: vec![0.0; d * d],
            total: vec![0.0; d * d],
        }
    }

    /// `partial (+)= leftᵀ right` for `rows` rows of `d` columns (row-major).
    fn add(&mut self, left: &[f32], right: &[f32], rows: usize, d: usize, accumulate: bool) {
        if self.symmetric {
            syrk_upper(&mut self.partial, left, rows, d, accumulate);
        } else {
            gemm_tn(&mut self.partial, left, right, rows, d, accumulate);
        }
    }

    fn flush(&mut self) {
        self.total
            .par_iter_mut()
            .zip(self.partial.par_iter())
            .for_each(|(t, p)| *t += *p as f64);
    }

    fn into_total(mut self, d: usize) -> Vec<f64> {
        if self.symmetric {
            for i in 0..d {
                for j in 0..i {
                    self.total[i * d + j] = self.total[j * d + i];
                }
            }
        }
        self.total
    }
}

/// `dst (+)= aᵀ b`, with `a`, `b` of `rows × d` and `dst` of `d × d`, all row-major.
fn gemm_tn(dst: &mut [f32], a: &[f32], b: &[f32], rows: usize, d: usize, accumulate: bool) {
    let d_i = d as isize;
    // SAFETY: dst is d×d, a and b are rows×d, row-major; the strides below describe exactly that.
    unsafe {
        gemm::gemm(
            d,
            d,
            rows,
            dst.as_mut_ptr(),
            1,
            d_i,
            accumulate,
            a.as_ptr(),
            d_i,
            1,
            b.as_ptr(),
            1,
            d_i,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// Upper tiles of `dst (+)= aᵀ a` (tiles on and above the diagonal; the strictly lower entries of
/// diagonal tiles are computed too and ignored), in parallel over tile pairs.
fn syrk_upper(dst: &mut [f32], a: &[f32], rows: usize, d: usize, accumulate: bool) {
    let tiles = d.div_ceil(SYRK_TILE);
    let pairs: Vec<(usize, usize)> = (0..tiles)
        .flat_map(|i| (i..tiles).map(move |j| (i, j)))
        .collect();
    let dst_ptr = SendPtr(dst.as_mut_ptr());
    let d_i = d as isize;
    pairs.par_iter().for_each(|&(ti, tj)| {
        let (i0, j0) = (ti * SYRK_TILE, tj * SYRK_TILE);
        let (ni, nj) = (SYRK_TILE.min(d - i0), SYRK_TILE.min(d - j0));
        let base = dst_ptr;
        // SAFETY: each task writes only its own tile (i0.., j0..) of dst, which is d×d row-major;
        // tiles of distinct pairs do not overlap; a is rows×d row-major.
        unsafe {
            gemm::gemm(
                ni,
                nj,
                rows,
                base.0.add(i0 * d + j0),
                1,
                d_i,
                accumulate,
                a.as_ptr().add(i0),
                d_i,
                1,
                a.as_ptr().add(j0),
                1,
                d_i,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint tiles of one buffer to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

struct CpuStats {
    unfolding: Unfolding,
    d: usize,
    gram: GramSum,
    cross: Option<GramSum>,
    target_gram: Option<GramSum>,
    rows: usize,
    rows_in_partial: usize,
    scratch_inputs: Vec<f32>,
    scratch_target: Vec<f32>,
}

impl CpuStats {
    fn new(spec: StatsSpec) -> Self {
        let d = spec.unfolding.layout().columns();
        let t = spec.with_target;
        let scratch = if spec.unfolding.is_dense() {
            0
        } else {
            CHUNK_ROWS * d
        };
        Self {
            unfolding: spec.unfolding,
            d,
            gram: GramSum::new(d, true),
            cross: t.then(|| GramSum::new(d, false)),
            target_gram: t.then(|| GramSum::new(d, true)),
            rows: 0,
            rows_in_partial: 0,
            scratch_inputs: vec![0.0; scratch],
            scratch_target: vec![0.0; if t { scratch } else { 0 }],
        }
    }

    fn sums(&mut self) -> impl Iterator<Item = &mut GramSum> {
        std::iter::once(&mut self.gram)
            .chain(self.cross.as_mut())
            .chain(self.target_gram.as_mut())
    }

    fn flush(&mut self) {
        if self.rows_in_partial > 0 {
            self.sums().for_each(GramSum::flush);
            self.rows_in_partial = 0;
        }
    }
}

impl StatsAccumulator for CpuStats {
    fn add_batch(&mut self, inputs: TensorView<'_>, target: Option<TensorView<'_>>) -> Result<()> {
        let n = self.unfolding.check_batch(&inputs, "inputs")?;
        inputs.check_finite("inputs")?;
        match (&target, self.cross.is_some()) {
            (Some(t), true) => {
                if t.shape != inputs.shape {
                    return Err(Error::Shape(format!(
                        "target has shape {:?}, inputs have {:?}; they must match",
                        t.shape, inputs.shape
                    )));
                }
                t.check_finite("target")?;
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err(Error::InvalidArgument(
                    "a target batch was given to statistics set up without a target".into(),
                ))
            }
            (None, true) => {
                return Err(Error::InvalidArgument(
                    "statistics set up with a target need a target batch with every input batch"
                        .into(),
                ))
            }
        }
        let d = self.d;
        let total_rows = n * self.unfolding.rows_per_image();
        let mut first = 0;
        while first < total_rows {
            let rows = CHUNK_ROWS.min(total_rows - first);
            let accumulate = self.rows_in_partial > 0;
            let (b, a): (&[f32], Option<&[f32]>) = if self.unfolding.is_dense() {
                (
                    &inputs.data[first * d..(first + rows) * d],
                    target.map(|t| &t.data[first * d..(first + rows) * d]),
                )
            } else {
                let len = rows * d;
                self.unfolding
                    .unfold_rows(inputs.data, first, &mut self.scratch_inputs[..len]);
                if let Some(t) = &target {
                    self.unfolding
                        .unfold_rows(t.data, first, &mut self.scratch_target[..len]);
                }
                (
                    &self.scratch_inputs[..len],
                    target.map(|_| &self.scratch_target[..len]),
                )
            };
            self.gram.add(b, b, rows, d, accumulate);
            if let (Some(cross), Some(a)) = (self.cross.as_mut(), a) {
                cross.add(b, a, rows, d, accumulate);
            }
            if let (Some(tg), Some(a)) = (self.target_gram.as_mut(), a) {
                tg.add(a, a, rows, d, accumulate);
            }
            self.rows_in_partial += rows;
            self.rows += rows;
            first += rows;
            if self.rows_in_partial >= FLUSH_ROWS {
                self.flush();
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<RawGrams> {
        self.flush();
        let d = self.d;
        Ok(RawGrams {
            gram: self.gram.into_total(d),
            cross: self.cross.map(|s| s.into_total(d)),
            target_gram: self.target_gram.map(|s| s.into_total(d)),
            rows: self.rows,
        })
    }
}

/// Greedy state on the CPU: `E` (upper triangle valid, f64) and `R`, with per-step scratch
/// allocated once.
struct CpuGreedy {
    layout: ChannelLayout,
    m: usize,
    tol: f64,
    /// Diagonal of the original Gram matrix (the reference of the dependence tolerance).
    gram_diag: Vec<f64>,
    /// Schur complement `E`, `D × D` row-major; entries below the diagonal are stale.
    schur: Vec<f64>,
    /// Residual correlation `R`, `D × m` row-major.
    residual_corr: Vec<f64>,
    selected: Vec<bool>,
    /// `V = E[:,J] L⁻ᵀ`, `D × ks`, and its transpose `ks × D`.
    v: Vec<f64>,
    v_t: Vec<f64>,
    /// `Y = L⁻¹ R[J,:]`, `ks × m`.
    y: Vec<f64>,
}

impl CpuGreedy {
    fn new(spec: GreedySpec<'_>) -> Result<Self> {
        let d = spec.layout.columns();
        let ks = spec.layout.group;
        Ok(Self {
            layout: spec.layout,
            m: spec.outputs,
            tol: spec.dependence_tol,
            gram_diag: (0..d).map(|i| spec.gram[i * d + i]).collect(),
            schur: spec.gram.to_vec(),
            residual_corr: spec.c0.to_vec(),
            selected: vec![false; spec.layout.channels],
            v: vec![0.0; d * ks],
            v_t: vec![0.0; d * ks],
            y: vec![0.0; ks * spec.outputs],
        })
    }

    /// `E[r][c]` for any `r, c`, reading the valid upper triangle.
    fn schur_at(&self, r: usize, c: usize) -> f64 {
        let d = self.layout.columns();
        if r <= c {
            self.schur[r * d + c]
        } else {
            self.schur[c * d + r]
        }
    }

    /// The lower triangle of the `ks × ks` block of channel `ch` into `block`.
    fn diag_block(&self, ch: usize, block: &mut [f64]) {
        let ks = self.layout.group;
        let j0 = ch * ks;
        for i in 0..ks {
            for j in 0..=i {
                block[i * ks + j] = self.schur_at(j0 + j, j0 + i);
            }
        }
    }
}

impl GreedyState for CpuGreedy {
    fn score(&mut self, gains: &mut [f64]) -> Result<()> {
        let ks = self.layout.group;
        let m = self.m;
        let this = &*self;
        gains.par_iter_mut().enumerate().for_each_init(
            || (vec![0.0; ks * ks], vec![0.0; ks * m], vec![false; ks]),
            |(block, rhs, kept), (ch, gain)| {
                if this.selected[ch] {
                    *gain = 0.0;
                    return;
                }
                this.diag_block(ch, block);
                let j0 = ch * ks;
                cholesky_dropping(block, ks, &this.gram_diag[j0..j0 + ks], this.tol, kept);
                rhs.copy_from_slice(&this.residual_corr[j0 * m..(j0 + ks) * m]);
                forward_solve(block, ks, kept, rhs, m);
                *gain = rhs.iter().map(|v| v * v).sum();
            },
        );
        Ok(())
    }

    fn select(&mut self, channel: usize) -> Result<()> {
        let ks = self.layout.group;
        let d = self.layout.columns();
        let m = self.m;
        if channel >= self.layout.channels || self.selected[channel] {
            return Err(Error::InvalidArgument(format!(
                "channel {channel} cannot be selected (out of range or already selected)"
            )));
        }
        let j0 = channel * ks;
        let mut l = vec![0.0; ks * ks];
        let mut kept = vec![false; ks];
        self.diag_block(channel, &mut l);
        cholesky_dropping(
            &mut l,
            ks,
            &self.gram_diag[j0..j0 + ks],
            self.tol,
            &mut kept,
        );
        self.selected[channel] = true;
        if !kept.iter().any(|&k| k) {
            return Ok(()); // Fully dependent block: nothing left to remove.
        }
        // V[r,:] = L⁻¹ E[J, r] for every row of a channel still in play.
        let selected = &self.selected;
        {
            let schur = &self.schur;
            let read = |r: usize, c: usize| {
                if r <= c {
                    schur[r * d + c]
                } else {
                    schur[c * d + r]
                }
            };
            self.v.par_chunks_mut(ks).enumerate().for_each(|(r, vr)| {
                if selected[r / ks] {
                    vr.fill(0.0);
                    return;
                }
                for (t, v) in vr.iter_mut().enumerate() {
                    *v = read(r, j0 + t);
                }
                forward_solve(&l, ks, &kept, vr, 1);
            });
        }
        for r in 0..d {
            for t in 0..ks {
                self.v_t[t * d + r] = self.v[r * ks + t];
            }
        }
        self.y
            .copy_from_slice(&self.residual_corr[j0 * m..(j0 + ks) * m]);
        forward_solve(&l, ks, &kept, &mut self.y, m);

        let (v, v_t, y) = (&self.v, &self.v_t, &self.y);
        self.schur
            .par_chunks_mut(d)
            .zip(self.residual_corr.par_chunks_mut(m))
            .enumerate()
            .for_each(|(r, (e_row, r_row))| {
                if selected[r / ks] {
                    return;
                }
                let vr = &v[r * ks..(r + 1) * ks];
                for (t, &coef) in vr.iter().enumerate() {
                    if coef == 0.0 {
                        continue;
                    }
                    let vt = &v_t[t * d + r..(t + 1) * d];
                    for (e, &x) in e_row[r..].iter_mut().zip(vt) {
                        *e -= coef * x;
                    }
                    for (rc, &yy) in r_row.iter_mut().zip(&y[t * m..(t + 1) * m]) {
                        *rc -= coef * yy;
                    }
                }
            });
        Ok(())
    }
}
