//! CPU kernels of the ops that exported models add to the basic CNN set: resizing, transposed
//! convolution, local response normalisation and reductions, on row-major f32 tensors with
//! shapes the caller has checked. Straightforward loops (one output element at a time, rayon over
//! planes): the reference the GPU kernels of `shaders/forward.wgsl` are tested against.

use rayon::prelude::*;

use crate::ir::{ConvTranspose, CoordMode, Lrn, NearestRounding, ReduceKind, Resize, ResizeMode};

/// The source coordinate of output pixel `x` on an axis of `input` → `output` pixels with
/// `scale`, as ONNX's `coordinate_transformation_mode` says.
pub fn source_coordinate(
    coord: CoordMode,
    x: usize,
    scale: f32,
    input: usize,
    output: usize,
) -> f32 {
    let x = x as f32;
    match coord {
        CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordMode::PytorchHalfPixel if output > 1 => (x + 0.5) / scale - 0.5,
        CoordMode::PytorchHalfPixel => 0.0,
        CoordMode::AlignCorners if output > 1 => x * (input - 1) as f32 / (output - 1) as f32,
        CoordMode::AlignCorners => 0.0,
        CoordMode::Asymmetric => x / scale,
    }
}

/// The nearest input index of source coordinate `s` on an axis of `input` pixels.
pub fn nearest_index(rounding: NearestRounding, s: f32, input: usize) -> usize {
    let i = match rounding {
        NearestRounding::RoundPreferFloor if s.fract() == 0.5 => s.floor(),
        NearestRounding::RoundPreferFloor | NearestRounding::RoundPreferCeil => s.round(),
        NearestRounding::Floor => s.floor(),
        NearestRounding::Ceil => s.ceil(),
    };
    (i.max(0.0) as usize).min(input - 1)
}

/// For source coordinate `s` on an axis of `input` pixels: the two neighbours and the weight of
/// the second (onnxruntime clamps the coordinate into the input first).
pub fn linear_taps(s: f32, input: usize) -> (usize, usize, f32) {
    let s = s.clamp(0.0, (input - 1) as f32);
    let lo = (s as usize).min(input - 1);
    let hi = (lo + 1).min(input - 1);
    (lo, hi, s - lo as f32)
}

/// Resize of `planes` planes of `h × w` into `out` (planes of the output size `r` gives).
pub fn resize(x: &[f32], planes: usize, input: [usize; 2], r: &Resize, out: &mut [f32]) {
    let Ok(([oh, ow], scales)) = r.resolve(input) else {
        return;
    };
    let [h, w] = input;
    let rows: Vec<f32> = (0..oh)
        .map(|y| source_coordinate(r.coord, y, scales[0], h, oh))
        .collect();
    let cols: Vec<f32> = (0..ow)
        .map(|x| source_coordinate(r.coord, x, scales[1], w, ow))
        .collect();
    if oh * ow == 0 {
        return;
    }
    out.par_chunks_mut(oh * ow)
        .take(planes)
        .enumerate()
        .for_each(|(p, plane)| {
            let src = &x[p * h * w..(p + 1) * h * w];
            for (y, row) in plane.chunks_mut(ow).enumerate() {
                for (xo, v) in row.iter_mut().enumerate() {
                    *v = match r.mode {
                        ResizeMode::Nearest(n) => {
                            let (iy, ix) =
                                (nearest_index(n, rows[y], h), nearest_index(n, cols[xo], w));
                            src[iy * w + ix]
                        }
                        ResizeMode::Linear => {
                            let (y0, y1, fy) = linear_taps(rows[y], h);
                            let (x0, x1, fx) = linear_taps(cols[xo], w);
                            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
                            let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
                            top * (1.0 - fy) + bottom * fy
                        }
                    };
                }
            }
        });
}

/// Transposed convolution of `n` images of `c × h × w` with a `(c, m/group, kh, kw)` weight into
/// `out` (`n × m × oh × ow`), each output element gathered from the inputs that reach it.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose(
    x: &[f32],
    c: usize,
    input: [usize; 2],
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    ct: &ConvTranspose,
    output: [usize; 2],
    out: &mut [f32],
) {
    let ([h, w], [oh, ow]) = (input, output);
    let (cg, mg) = (c / ct.group, m / ct.group);
    let (win, pads) = (&ct.window, ct.pads());
    let [kh, kw] = win.kernel;
    if oh * ow == 0 {
        return;
    }
    // One source index per (output, kernel) position along an axis, if the stride reaches it.
    let source = |o: usize, k: usize, a: usize, len: usize| -> Option<usize> {
        let t = (o + pads[a]).checked_sub(k * win.dilations[a])?;
        (t % win.strides[a] == 0 && t / win.strides[a] < len).then_some(t / win.strides[a])
    };
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, dst)| {
            let (img, mo) = (plane / m, plane % m);
            let (g, ml) = (mo / mg, mo % mg);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = bias.map_or(0.0, |b| b[mo]) as f64;
                    for ky in 0..kh {
                        let Some(iy) = source(oy, ky, 0, h) else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) = source(ox, kx, 1, w) else {
                                continue;
                            };
                            for ci in g * cg..(g + 1) * cg {
                                let xv = x[((img * c + ci) * h + iy) * w + ix];
                                let wv = weight[((ci * mg + ml) * kh + ky) * kw + kx];
                                sum += (xv * wv) as f64;
                            }
                        }
                    }
                    dst[oy * ow + ox] = sum as f32;
                }
            }
        });
}

/// LRN across the `c` channels of `n` images with `inner` values per channel.
pub fn lrn(x: &[f32], c: usize, inner: usize, p: &Lrn, out: &mut [f32]) {
    let (before, after) = ((p.size - 1) / 2, p.size / 2);
    if inner == 0 {
        return;
    }
    out.par_chunks_mut(inner)
        .enumerate()
        .for_each(|(plane, dst)| {
            let (img, ch) = (plane / c, plane % c);
            let (lo, hi) = (ch.saturating_sub(before), (ch + after).min(c - 1));
            for (j, v) in dst.iter_mut().enumerate() {
                let sq: f32 = (lo..=hi)
                    .map(|k| x[(img * c + k) * inner + j].powi(2))
                    .sum();
                let xv = x[plane * inner + j];
                *v = xv / (p.bias + p.alpha / p.size as f32 * sq).powf(p.beta);
            }
        });
}

/// Reduces the middle axis of `x` seen as `outer × len × inner` into `out` (`outer × inner`
/// values, which gives `outer`).
pub fn reduce(x: &[f32], kind: ReduceKind, len: usize, inner: usize, out: &mut [f32]) {
    out.par_iter_mut().enumerate().for_each(|(i, v)| {
        let (o, j) = (i / inner, i % inner);
        let values = (0..len).map(|k| x[(o * len + k) * inner + j]);
        *v = match kind {
            ReduceKind::Max => values.fold(f32::NEG_INFINITY, f32::max),
            ReduceKind::Sum => values.sum(),
            ReduceKind::Mean => values.sum::<f32>() / len as f32,
        };
    });
}
