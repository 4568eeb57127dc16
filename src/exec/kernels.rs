//! CPU kernels of the forward pass on row-major NCHW f32 tensors, multi-threaded with rayon. Each
//! takes concrete shapes that the caller has checked; the GEMMs go through
//! [`crate::linalg::gemm`].

use rayon::prelude::*;

use crate::error::Result;
use crate::ir::{Binary, PadMode, PoolKind, Unary};
use crate::linalg::gemm::{gemm, MatMut, MatRef, Par};

/// Concrete 2-D window geometry of one conv or pool on an `h × w` input.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Input height and width.
    pub input: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides.
    pub strides: [usize; 2],
    /// Dilations.
    pub dilations: [usize; 2],
    /// Pads before (top, left).
    pub pad_begin: [usize; 2],
}

impl Geometry {
    /// For output coordinate range along axis `a` and kernel offset `k`: the output indices
    /// `[lo, hi)` whose input index `o·s − p + k·d` lies inside `[0, input)`.
    #[inline]
    fn valid(&self, a: usize, k: usize) -> (usize, usize) {
        let (s, p, off, n, out) = (
            self.strides[a] as isize,
            self.pad_begin[a] as isize,
            (k * self.dilations[a]) as isize,
            self.input[a] as isize,
            self.output[a] as isize,
        );
        // o·s + off − p ≥ 0  ⇔  o ≥ ceil((p − off) / s)
        let lo = if p - off > 0 {
            (p - off + s - 1) / s
        } else {
            0
        };
        // o·s + off − p ≤ n − 1  ⇔  o ≤ floor((n − 1 + p − off) / s)
        let last = n - 1 + p - off;
        let hi = if last < 0 { 0 } else { last / s + 1 };
        (lo.clamp(0, out) as usize, hi.clamp(0, out) as usize)
    }
}

/// Output columns one conv GEMM aims for when several images share it (small late feature maps
/// would otherwise give skinny products that reread the weights per image).
const TARGET_COLUMNS: usize = 512;

/// Im2col of channels `c0..` of `images` (each `c × h × w`) into `col`, a
/// `(cg·kh·kw) × (images·oh·ow)` row-major matrix.
fn im2col(x: &[f32], c: usize, c0: usize, g: &Geometry, images: usize, col: &mut [f32]) {
    let [h, w] = g.input;
    let [oh, ow] = g.output;
    let [kh, kw] = g.kernel;
    let ohw = oh * ow;
    let cols = images * ohw;
    col.par_chunks_mut(cols)
        .with_min_len(4)
        .enumerate()
        .for_each(|(row, out)| {
            let (ci, k) = (row / (kh * kw), row % (kh * kw));
            let (ki, kj) = (k / kw, k % kw);
            let (y0, y1) = g.valid(0, ki);
            let (x0, x1) = g.valid(1, kj);
            for img in 0..images {
                let plane = &x[(img * c + c0 + ci) * h * w..][..h * w];
                let dst = &mut out[img * ohw..(img + 1) * ohw];
                for oy in 0..oh {
                    let drow = &mut dst[oy * ow..(oy + 1) * ow];
                    if oy < y0 || oy >= y1 {
                        drow.fill(0.0);
                        continue;
                    }
                    let iy = oy * g.strides[0] + ki * g.dilations[0] - g.pad_begin[0];
                    let src = &plane[iy * w..(iy + 1) * w];
                    drow[..x0].fill(0.0);
                    drow[x1.max(x0)..].fill(0.0);
                    let s = g.strides[1];
                    let base = kj * g.dilations[1];
                    if s == 1 && x1 > x0 {
                        let start = x0 + base - g.pad_begin[1];
                        drow[x0..x1].copy_from_slice(&src[start..start + (x1 - x0)]);
                    } else {
                        for ox in x0..x1 {
                            drow[ox] = src[ox * s + base - g.pad_begin[1]];
                        }
                    }
                }
            }
        });
}

thread_local! {
    /// Per-thread im2col and GEMM output buffers of [`conv2d`] (a fresh allocation per chunk
    /// cost a zero fill and page faults as large as the copy itself).
    static CONV_SCRATCH: std::cell::Cell<(Vec<f32>, Vec<f32>)> = const {
        std::cell::Cell::new((Vec::new(), Vec::new()))
    };
}

/// 2-D convolution: `x` is `n × c × h × w`, `weight` is `m × (c/group) × kh × kw`, `out` is
/// `n × m × oh × ow`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    n: usize,
    c: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    group: usize,
    g: &Geometry,
    out: &mut [f32],
) -> Result<()> {
    let [oh, ow] = g.output;
    let ohw = oh * ow;
    let [kh, kw] = g.kernel;
    if group == c && group == m {
        depthwise(x, n, c, weight, bias, g, out);
        return Ok(());
    }
    let (cg, mg) = (c / group, m / group);
    let k = cg * kh * kw;
    let pointwise =
        kh == 1 && kw == 1 && g.strides == [1, 1] && g.pad_begin == [0, 0] && g.input == g.output;
    let per_chunk = (TARGET_COLUMNS / ohw.max(1)).clamp(1, n.max(1));
    let chunks = n.div_ceil(per_chunk);
    let threads = rayon::current_num_threads();
    // Enough chunks to feed every thread: parallel over chunks, sequential GEMMs; else one chunk
    // at a time with parallel GEMMs.
    let outer_parallel = chunks >= threads;
    let inner = if outer_parallel { Par::Seq } else { Par::all() };
    let run_chunk = |ci: usize, out_chunk: &mut [f32]| -> Result<()> {
        let first = ci * per_chunk;
        let imgs = per_chunk.min(n - first);
        let xs = &x[first * c * g.input[0] * g.input[1]..];
        let cols = imgs * ohw;
        // Scratch reused across calls on this thread (taken, so that a chunk rayon runs on this
        // thread while it waits inside this one gets its own).
        let (mut col, mut tmp) = CONV_SCRATCH.take();
        for gi in 0..group {
            let wg = MatRef::row_major(&weight[gi * mg * k..(gi + 1) * mg * k], mg, k)?;
            let rhs = if pointwise && imgs == 1 && group == 1 {
                MatRef::row_major(&xs[..c * ohw], c, ohw)?
            } else {
                col.resize(k * cols, 0.0);
                im2col(xs, c, gi * cg, g, imgs, &mut col);
                MatRef::row_major(&col, k, cols)?
            };
            if imgs == 1 {
                let dst = &mut out_chunk[gi * mg * ohw..(gi + 1) * mg * ohw];
                gemm(MatMut::row_major(dst, mg, ohw)?, false, wg, rhs, 1.0, inner)?;
            } else {
                tmp.resize(mg * cols, 0.0);
                gemm(
                    MatMut::row_major(&mut tmp, mg, cols)?,
                    false,
                    wg,
                    rhs,
                    1.0,
                    inner,
                )?;
                for img in 0..imgs {
                    for r in 0..mg {
                        let dst = &mut out_chunk[(img * m + gi * mg + r) * ohw..][..ohw];
                        dst.copy_from_slice(&tmp[r * cols + img * ohw..][..ohw]);
                    }
                }
            }
        }
        if let Some(b) = bias {
            for img in 0..imgs {
                for (ch, &bv) in b.iter().enumerate() {
                    for v in &mut out_chunk[(img * m + ch) * ohw..][..ohw] {
                        *v += bv;
                    }
                }
            }
        }
        CONV_SCRATCH.set((col, tmp));
        Ok(())
    };
    let chunk_len = per_chunk * m * ohw;
    if outer_parallel {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .try_for_each(|(ci, o)| run_chunk(ci, o))
    } else {
        out.chunks_mut(chunk_len)
            .enumerate()
            .try_for_each(|(ci, o)| run_chunk(ci, o))
    }
}

/// Depthwise conv (one filter per channel): in parallel over (image, channel) planes.
fn depthwise(
    x: &[f32],
    _n: usize,
    c: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Geometry,
    out: &mut [f32],
) {
    let [h, w] = g.input;
    let [oh, ow] = g.output;
    let [kh, kw] = g.kernel;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, dst)| {
            let ch = plane % c;
            let src = &x[plane * h * w..][..h * w];
            dst.fill(bias.map_or(0.0, |b| b[ch]));
            let wk = &weight[ch * kh * kw..][..kh * kw];
            for ki in 0..kh {
                let (y0, y1) = g.valid(0, ki);
                for kj in 0..kw {
                    let (x0, x1) = g.valid(1, kj);
                    if x1 <= x0 {
                        continue;
                    }
                    let wv = wk[ki * kw + kj];
                    let base = kj * g.dilations[1];
                    for oy in y0..y1 {
                        let iy = oy * g.strides[0] + ki * g.dilations[0] - g.pad_begin[0];
                        let srow = &src[iy * w..(iy + 1) * w];
                        let drow = &mut dst[oy * ow..(oy + 1) * ow];
                        if g.strides[1] == 1 {
                            let start = x0 + base - g.pad_begin[1];
                            for (d, s) in drow[x0..x1].iter_mut().zip(&srow[start..]) {
                                *d += wv * s;
                            }
                        } else {
                            let s = g.strides[1];
                            for ox in x0..x1 {
                                drow[ox] += wv * srow[ox * s + base - g.pad_begin[1]];
                            }
                        }
                    }
                }
            }
        });
}

/// Max or average pooling over `planes` planes of `h × w`.
pub fn pool(x: &[f32], kind: PoolKind, g: &Geometry, pad_end: [usize; 2], out: &mut [f32]) {
    let [h, w] = g.input;
    let [oh, ow] = g.output;
    let [kh, kw] = g.kernel;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, dst)| {
            let src = &x[plane * h * w..][..h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut max = f32::NEG_INFINITY;
                    let mut sum = 0.0f32;
                    let mut count = 0usize;
                    for ki in 0..kh {
                        let iy = (oy * g.strides[0] + ki * g.dilations[0]) as isize
                            - g.pad_begin[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kj in 0..kw {
                            let ix = (ox * g.strides[1] + kj * g.dilations[1]) as isize
                                - g.pad_begin[1] as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let v = src[iy as usize * w + ix as usize];
                            max = max.max(v);
                            sum += v;
                            count += 1;
                        }
                    }
                    dst[oy * ow + ox] = match kind {
                        PoolKind::Max => max,
                        PoolKind::Average { count_include_pad } => {
                            let divisor = if count_include_pad {
                                // PyTorch/ONNX: the window clipped to the padded input.
                                let ys = (oy * g.strides[0]) as isize - g.pad_begin[0] as isize;
                                let xs = (ox * g.strides[1]) as isize - g.pad_begin[1] as isize;
                                let ye = (ys + kh as isize).min((h + pad_end[0]) as isize);
                                let xe = (xs + kw as isize).min((w + pad_end[1]) as isize);
                                ((ye - ys) * (xe - xs)).max(1) as usize
                            } else {
                                count.max(1)
                            };
                            sum / divisor as f32
                        }
                    };
                }
            }
        });
}

/// Mean of each plane of `len` values.
pub fn global_average(x: &[f32], len: usize, out: &mut [f32]) {
    out.par_iter_mut().enumerate().for_each(|(p, o)| {
        *o = x[p * len..(p + 1) * len].iter().sum::<f32>() / len as f32;
    });
}

/// `out[i] = op(x[i])`.
pub fn unary(x: &[f32], op: Unary, out: &mut [f32]) {
    out.copy_from_slice(x);
    unary_in_place(out, op);
}

/// `x[i] = op(x[i])`.
pub fn unary_in_place(x: &mut [f32], op: Unary) {
    // One loop per op, so that the op is not matched per element and the loop vectorizes.
    fn map(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send) {
        x.par_chunks_mut(16 * 1024).for_each(|o| {
            for d in o.iter_mut() {
                *d = f(*d);
            }
        });
    }
    match op {
        Unary::Relu => map(x, |v| if v < 0.0 { 0.0 } else { v }),
        Unary::Clip { min, max } => map(x, move |v| {
            if v < min {
                min
            } else if v > max {
                max
            } else {
                v
            }
        }),
        other => map(x, move |v| other.apply(v)),
    }
}

/// Per-channel affine `out = x · scale[c] + shift[c]` over `n × c × inner`.
pub fn channel_affine(
    x: &[f32],
    c: usize,
    inner: usize,
    scale: &[f32],
    shift: &[f32],
    out: &mut [f32],
) {
    out.copy_from_slice(x);
    channel_affine_in_place(out, c, inner, scale, shift);
}

/// [`channel_affine`] overwriting `x`.
pub fn channel_affine_in_place(
    x: &mut [f32],
    c: usize,
    inner: usize,
    scale: &[f32],
    shift: &[f32],
) {
    x.par_chunks_mut(inner.max(1))
        .enumerate()
        .for_each(|(p, o)| {
            let (s, t) = (scale[p % c], shift[p % c]);
            for d in o.iter_mut() {
                *d = *d * s + t;
            }
        });
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Broadcast binary op: `a` of shape `sa`, `b` of `sb`, `out` of the broadcast shape `so`.
pub fn binary(
    op: Binary,
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    so: &[usize],
    out: &mut [f32],
) {
    if sa == sb {
        out.par_chunks_mut(16 * 1024)
            .zip(a.par_chunks(16 * 1024).zip(b.par_chunks(16 * 1024)))
            .for_each(|(o, (x, y))| {
                for ((d, p), q) in o.iter_mut().zip(x).zip(y) {
                    *d = op.apply(*p, *q);
                }
            });
        return;
    }
    // Broadcast strides (0 on broadcast axes), then merge adjacent axes with the same pattern.
    let rank = so.len();
    let pad = |s: &[usize]| -> Vec<usize> {
        let st = strides(s);
        (0..rank)
            .map(|i| match (i + s.len()).checked_sub(rank) {
                Some(j) if s[j] != 1 => st[j],
                _ => 0,
            })
            .collect()
    };
    let (ta, tb) = (pad(sa), pad(sb));
    let mut dims: Vec<(usize, usize, usize)> = Vec::new(); // (size, stride a, stride b)
    for i in 0..rank {
        if so[i] == 1 {
            continue;
        }
        if let Some(last) = dims.last_mut() {
            let merge_a = (last.1 == 0) == (ta[i] == 0) && (ta[i] == 0 || last.1 == ta[i] * so[i]);
            let merge_b = (last.2 == 0) == (tb[i] == 0) && (tb[i] == 0 || last.2 == tb[i] * so[i]);
            if merge_a && merge_b {
                last.0 *= so[i];
                last.1 = ta[i];
                last.2 = tb[i];
                continue;
            }
        }
        dims.push((so[i], ta[i], tb[i]));
    }
    if dims.is_empty() {
        dims.push((1, 0, 0));
    }
    let (inner, ia, ib) = *dims.last().expect("one axis");
    let outer: Vec<(usize, usize, usize)> = dims[..dims.len() - 1].to_vec();
    out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| {
        let (mut oa, mut ob, mut r) = (0, 0, row);
        for &(size, sa, sb) in outer.iter().rev() {
            let i = r % size;
            r /= size;
            oa += i * sa;
            ob += i * sb;
        }
        match (ia, ib) {
            (1, 0) => {
                let q = b[ob];
                for (d, p) in o.iter_mut().zip(&a[oa..oa + inner]) {
                    *d = op.apply(*p, q);
                }
            }
            (0, 1) => {
                let p = a[oa];
                for (d, q) in o.iter_mut().zip(&b[ob..ob + inner]) {
                    *d = op.apply(p, *q);
                }
            }
            _ => {
                for (j, d) in o.iter_mut().enumerate() {
                    *d = op.apply(a[oa + j * ia], b[ob + j * ib]);
                }
            }
        }
    });
}

/// Copies `out[idx] = x[offset + Σ idx[a]·step[a]]` over all indices of `shape` (steps may be
/// negative): the core of Slice.
pub fn strided_gather(x: &[f32], offset: isize, step: &[isize], shape: &[usize], out: &mut [f32]) {
    let rank = shape.len();
    if rank == 0 {
        out[0] = x[offset as usize];
        return;
    }
    let inner = shape[rank - 1];
    if inner == 0 {
        return;
    }
    let s_in = step[rank - 1];
    out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| {
        let (mut off, mut r) = (offset, row);
        for a in (0..rank - 1).rev() {
            off += (r % shape[a]) as isize * step[a];
            r /= shape[a];
        }
        for (j, d) in o.iter_mut().enumerate() {
            *d = x[(off + j as isize * s_in) as usize];
        }
    });
}

/// Pad with `pads` = begins then ends per axis (negative crops).
pub fn pad(
    x: &[f32],
    shape: &[usize],
    pads: &[i64],
    mode: PadMode,
    value: f32,
    out_shape: &[usize],
    out: &mut [f32],
) {
    let rank = shape.len();
    let st = strides(shape);
    // Source index along axis `a` for output index `o`, or None (constant fill).
    let map = move |a: usize, o: usize| -> Option<usize> {
        let d = shape[a] as i64;
        let i = o as i64 - pads[a];
        if (0..d).contains(&i) {
            return Some(i as usize);
        }
        match mode {
            PadMode::Constant => None,
            PadMode::Edge => Some(i.clamp(0, d - 1) as usize),
            PadMode::Reflect => {
                if d == 1 {
                    return Some(0);
                }
                let period = 2 * (d - 1);
                let mut r = i.rem_euclid(period);
                if r >= d {
                    r = period - r;
                }
                Some(r as usize)
            }
        }
    };
    if rank == 0 {
        out.copy_from_slice(x);
        return;
    }
    let inner = out_shape[rank - 1];
    if inner == 0 {
        return;
    }
    out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| {
        let (mut off, mut r) = (Some(0usize), row);
        for a in (0..rank - 1).rev() {
            let i = r % out_shape[a];
            r /= out_shape[a];
            off = match (off, map(a, i)) {
                (Some(base), Some(src)) => Some(base + src * st[a]),
                _ => None,
            };
        }
        for (j, d) in o.iter_mut().enumerate() {
            *d = match (off, map(rank - 1, j)) {
                (Some(base), Some(src)) => x[base + src],
                _ => value,
            };
        }
    });
}

/// Softmax over groups: `x` is `outer × axis × inner`, normalised along the middle axis.
pub fn softmax(x: &[f32], outer: usize, axis: usize, inner: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), outer * axis * inner);
    out.par_chunks_mut(axis * inner)
        .zip(x.par_chunks(axis * inner))
        .for_each(|(o, i)| {
            for j in 0..inner {
                let max = (0..axis)
                    .map(|k| i[k * inner + j])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for k in 0..axis {
                    let e = (i[k * inner + j] - max).exp();
                    o[k * inner + j] = e;
                    sum += e;
                }
                for k in 0..axis {
                    o[k * inner + j] /= sum;
                }
            }
        });
}
