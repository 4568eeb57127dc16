//! The CPU backend: multi-threaded (rayon), blocked f32 GEMM kernels (the `gemm` crate) for the
//! statistics, f64 for the greedy state. It is the baseline every GPU figure is compared with.
//!
//! Statistics: `stats.rs` (unfolding a chunk at a time, SYRK/GEMM in f32, totals in f64).
//!
//! Greedy: `E` is kept in f64, upper triangle only; each step is one rank-`ks` downdate of the
//! rows of the channels still in play, parallel over rows.

use rayon::prelude::*;

use super::{Backend, GreedySpec, GreedyState, StatsAccumulator, StatsSpec};
use crate::error::{Error, Result};
use crate::layer::ChannelLayout;
use crate::linalg::gemm::{gemm, MatMut, MatRef, Par};
use crate::linalg::{cholesky_dropping, factor_block, forward_solve};

mod stats;

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

    fn stats_accumulator(&self, spec: StatsSpec<'_>) -> Result<Box<dyn StatsAccumulator + '_>> {
        Ok(Box::new(stats::CpuStats::new(spec)?))
    }

    fn greedy_state(&self, spec: GreedySpec<'_>) -> Result<Box<dyn GreedyState + '_>> {
        Ok(Box::new(CpuGreedy::new(spec)?))
    }
}

/// Columns of pending downdates gathered before they are applied to `E` with one GEMM.
const PANEL_COLUMNS: usize = 128;

/// Rows per band of the greedy's panel update of an `n × n` `E`: about four bands per thread
/// (the bands near the top hold more of the upper triangle; rayon balances them), 16 to 128.
fn flush_band_rows(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(4 * threads).clamp(16, 128)
}

/// Greedy state on the CPU, in f64.
///
/// The Schur complement is downdated blocked, like a right-looking blocked Cholesky: the rank-`ks`
/// factors `V = E[:,J] L⁻ᵀ` of the last few picks are kept in a panel and applied to `E` together
/// by one GEMM (BLAS-3 speed instead of a memory-bound rank-`ks` update per step). What each step
/// needs now is kept current eagerly: the diagonal blocks `E[I,I]` (for scoring), the residual
/// correlation `R`, and the picked block's column `E[:,J]`, corrected by the panel on the fly.
/// At every panel flush `E` is compacted to the columns of the channels still in play, so late
/// steps cost less than early ones.
struct CpuGreedy {
    layout: ChannelLayout,
    m: usize,
    tol: f64,
    /// Diagonal of the original Gram matrix (the reference of the dependence tolerance).
    gram_diag: Vec<f64>,
    /// Current `E[I,I]` of every channel, `channels × ks × ks`.
    diag_blocks: Vec<f64>,
    /// `E` as of the last flush, restricted to `compact_cols`, row-major, upper triangle valid.
    schur: Vec<f64>,
    /// The next compacted `E`, built at a flush.
    schur_next: Vec<f64>,
    /// Compact index → original column.
    compact_cols: Vec<usize>,
    /// Original column → compact index (`usize::MAX` once compacted away).
    compact_pos: Vec<usize>,
    /// Pending factors `V`, `compact × panel_cap` row-major, first `panel_len` columns used.
    panel: Vec<f64>,
    panel_cap: usize,
    panel_len: usize,
    /// The panel restricted to the rows kept at a flush (scratch).
    panel_kept: Vec<f64>,
    /// Residual correlation `R`, `D × m` row-major (original indexing).
    residual_corr: Vec<f64>,
    selected: Vec<bool>,
    /// `V` of the current pick, `compact × ks`.
    v: Vec<f64>,
    /// `Y = L⁻¹ R[J,:]`, `ks × m`.
    y: Vec<f64>,
}

impl CpuGreedy {
    fn new(spec: GreedySpec<'_>) -> Result<Self> {
        let d = spec.layout.columns();
        let ks = spec.layout.columns_per_channel;
        let expect = |name: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(Error::Shape(format!(
                    "{name} has {len} entries, expected {want}"
                )))
            }
        };
        expect("gram", spec.gram.len(), d * d)?;
        expect("c0", spec.c0.len(), d * spec.outputs)?;
        let gram = spec.gram.values()?;
        let mut diag_blocks = vec![0.0; spec.layout.channels * ks * ks];
        for (ch, block) in diag_blocks.chunks_exact_mut(ks * ks).enumerate() {
            for a in 0..ks {
                for b in 0..ks {
                    block[a * ks + b] = gram[(ch * ks + a) * d + ch * ks + b];
                }
            }
        }
        let panel_cap = PANEL_COLUMNS.max(ks);
        Ok(Self {
            layout: spec.layout,
            m: spec.outputs,
            tol: spec.dependence_tol,
            gram_diag: (0..d).map(|i| gram[i * d + i]).collect(),
            diag_blocks,
            schur: gram.to_vec(),
            schur_next: Vec::new(),
            compact_cols: (0..d).collect(),
            compact_pos: (0..d).collect(),
            panel: vec![0.0; d * panel_cap],
            panel_cap,
            panel_len: 0,
            panel_kept: Vec::new(),
            residual_corr: spec.c0.values()?.to_vec(),
            selected: vec![false; spec.layout.channels],
            v: vec![0.0; d * ks],
            y: vec![0.0; ks * spec.outputs],
        })
    }

    /// Applies the pending panel to `E` and compacts it to the channels still in play:
    /// `E' = E[K,K] − P[K,:] P[K,:]ᵀ`, upper part only, in parallel over bands of rows.
    fn flush(&mut self) -> Result<()> {
        let ks = self.layout.columns_per_channel;
        let old_n = self.compact_cols.len();
        let keep: Vec<usize> = (0..old_n)
            .filter(|&r| !self.selected[self.compact_cols[r] / ks])
            .collect();
        let n = keep.len();
        let (cap, p) = (self.panel_cap, self.panel_len);
        self.panel_kept.resize(n * p.max(1), 0.0);
        for (i, &r) in keep.iter().enumerate() {
            self.panel_kept[i * p..(i + 1) * p].copy_from_slice(&self.panel[r * cap..r * cap + p]);
        }
        self.schur_next.resize(n * n, 0.0);
        {
            let old = &self.schur;
            let keep = &keep;
            self.schur_next
                .par_chunks_mut(n.max(1))
                .enumerate()
                .for_each(|(i, row)| {
                    let src = &old[keep[i] * old_n..(keep[i] + 1) * old_n];
                    for j in i..n {
                        row[j] = src[keep[j]];
                    }
                });
        }
        if p > 0 && n > 0 {
            // E'[K,K] −= P[K,:] P[K,:]ᵀ on the upper part, in parallel over bands of rows: the
            // band of rows i0.. needs the columns i0.. only (the lower entries of its diagonal
            // block are computed and never read).
            let band = flush_band_rows(n);
            let panel = MatRef::row_major(&self.panel_kept[..n * p], n, p)?;
            self.schur_next[..n * n]
                .par_chunks_mut(band * n)
                .enumerate()
                .try_for_each(|(b, rows)| {
                    let i0 = b * band;
                    let (ni, cols) = (rows.len() / n, n - i0);
                    gemm(
                        MatMut::new(&mut rows[i0..], ni, cols, n)?,
                        true,
                        panel.submatrix(i0, 0, ni, p)?,
                        panel.submatrix(i0, 0, cols, p)?.t(),
                        -1.0,
                        Par::Seq,
                    )
                })?;
        }
        std::mem::swap(&mut self.schur, &mut self.schur_next);
        let cols: Vec<usize> = keep.iter().map(|&r| self.compact_cols[r]).collect();
        self.compact_pos.fill(usize::MAX);
        for (i, &c) in cols.iter().enumerate() {
            self.compact_pos[c] = i;
        }
        self.compact_cols = cols;
        self.panel_len = 0;
        Ok(())
    }
}

impl GreedyState for CpuGreedy {
    fn score(&mut self, gains: &mut [f64]) -> Result<()> {
        let ks = self.layout.columns_per_channel;
        let m = self.m;
        let this = &*self;
        gains.par_iter_mut().enumerate().for_each_init(
            || (vec![0.0; ks * ks], vec![0.0; ks * m], vec![false; ks]),
            |(block, rhs, kept), (ch, gain)| {
                if this.selected[ch] {
                    *gain = 0.0;
                    return;
                }
                let j0 = ch * ks;
                block.copy_from_slice(&this.diag_blocks[ch * ks * ks..(ch + 1) * ks * ks]);
                cholesky_dropping(block, ks, &this.gram_diag[j0..j0 + ks], this.tol, kept);
                rhs.copy_from_slice(&this.residual_corr[j0 * m..(j0 + ks) * m]);
                forward_solve(block, ks, kept, rhs, m);
                *gain = rhs.iter().map(|v| v * v).sum();
            },
        );
        Ok(())
    }

    fn select(&mut self, channel: usize) -> Result<()> {
        let ks = self.layout.columns_per_channel;
        let m = self.m;
        if channel >= self.layout.channels || self.selected[channel] {
            return Err(Error::InvalidArgument(format!(
                "channel {channel} cannot be selected (out of range or already selected)"
            )));
        }
        let j0 = channel * ks;
        let (l, kept) = factor_block(
            self.diag_blocks[channel * ks * ks..(channel + 1) * ks * ks].to_vec(),
            &self.gram_diag[j0..j0 + ks],
            self.tol,
        );
        self.selected[channel] = true;
        if !kept.iter().any(|&k| k) {
            return Ok(()); // Fully dependent block: nothing left to remove.
        }
        let n = self.compact_cols.len();
        let jc = self.compact_pos[j0];
        let (cap, p) = (self.panel_cap, self.panel_len);
        // V[r,:] = L⁻¹ (E[J, r] − P[J,:] P[r,:]ᵀ) for every row still in play.
        {
            let (schur, panel, cols, selected) =
                (&self.schur, &self.panel, &self.compact_cols, &self.selected);
            self.v[..n * ks]
                .par_chunks_mut(ks)
                .enumerate()
                .for_each(|(r, vr)| {
                    if selected[cols[r] / ks] {
                        vr.fill(0.0);
                        return;
                    }
                    let pr = &panel[r * cap..r * cap + p];
                    for (t, v) in vr.iter_mut().enumerate() {
                        let c = jc + t;
                        let e = if r <= c {
                            schur[r * n + c]
                        } else {
                            schur[c * n + r]
                        };
                        let pc = &panel[c * cap..c * cap + p];
                        *v = e - pr.iter().zip(pc).map(|(a, b)| a * b).sum::<f64>();
                    }
                    forward_solve(&l, ks, &kept, vr, 1);
                });
        }
        let v = &self.v[..n * ks];
        // Diagonal blocks and R, eagerly.
        {
            let (pos, selected) = (&self.compact_pos, &self.selected);
            self.diag_blocks
                .par_chunks_mut(ks * ks)
                .enumerate()
                .for_each(|(ch, block)| {
                    if selected[ch] {
                        return;
                    }
                    let c = pos[ch * ks];
                    let vb = &v[c * ks..(c + ks) * ks];
                    for a in 0..ks {
                        for b in 0..ks {
                            let mut s = 0.0;
                            for t in 0..ks {
                                s += vb[a * ks + t] * vb[b * ks + t];
                            }
                            block[a * ks + b] -= s;
                        }
                    }
                });
        }
        self.y
            .copy_from_slice(&self.residual_corr[j0 * m..(j0 + ks) * m]);
        forward_solve(&l, ks, &kept, &mut self.y, m);
        {
            let (pos, selected, y) = (&self.compact_pos, &self.selected, &self.y);
            self.residual_corr
                .par_chunks_mut(m)
                .enumerate()
                .for_each(|(o, r_row)| {
                    if selected[o / ks] {
                        return;
                    }
                    let vr = &v[pos[o] * ks..(pos[o] + 1) * ks];
                    for (t, &coef) in vr.iter().enumerate() {
                        if coef != 0.0 {
                            for (rc, &yy) in r_row.iter_mut().zip(&y[t * m..(t + 1) * m]) {
                                *rc -= coef * yy;
                            }
                        }
                    }
                });
        }
        // Append V to the panel; apply the panel once it is full.
        for r in 0..n {
            self.panel[r * cap + p..r * cap + p + ks].copy_from_slice(&v[r * ks..(r + 1) * ks]);
        }
        self.panel_len += ks;
        if self.panel_len + ks > cap {
            self.flush()?;
        }
        Ok(())
    }
}
