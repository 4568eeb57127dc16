//! Dispatch of forward.wgsl's kernels for the ops exported models add to the basic CNN set:
//! Resize, the reductions and GlobalMaxPool, LRN and ConvTranspose (their CPU twins are in
//! [`crate::exec::kernels_nchw`]).

use std::rc::Rc;

use super::simple::{bytes, flat, FwdParams, SimpleKernels};
use super::Batch;
use crate::error::Result;
use crate::gpu::PooledBuffer;
use crate::ir::{ConvTranspose, CoordMode, NearestRounding, Node, Op, ReduceKind, ResizeMode};

fn u32_of(node: &Node, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| node.error(format!("size {v} is beyond the GPU kernels' range")))
}

/// Resize, the reductions, GlobalMaxPool and LRN: input `a` of shape `xs`, output `o` of
/// `count` values and shape `out_shape` (buffers with their bound bytes).
pub(super) fn run(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    node: &Node,
    (a, xs): ((&wgpu::Buffer, u64), &[usize]),
    o: (&wgpu::Buffer, u64),
    out_shape: &[usize],
) -> Result<()> {
    let count: usize = out_shape.iter().product();
    match &node.op {
        Op::Resize(r) => {
            let (size, scales) = r.resolve([xs[2], xs[3]]).map_err(|e| node.error(e))?;
            debug_assert_eq!(&out_shape[2..], &size[..]);
            let p = FwdParams {
                op: matches!(r.mode, ResizeMode::Linear) as u32,
                flag: match r.coord {
                    CoordMode::HalfPixel => 0,
                    CoordMode::PytorchHalfPixel => 1,
                    CoordMode::AlignCorners => 2,
                    CoordMode::Asymmetric => 3,
                },
                channels: match r.mode {
                    ResizeMode::Nearest(NearestRounding::RoundPreferFloor) | ResizeMode::Linear => {
                        0
                    }
                    ResizeMode::Nearest(NearestRounding::RoundPreferCeil) => 1,
                    ResizeMode::Nearest(NearestRounding::Floor) => 2,
                    ResizeMode::Nearest(NearestRounding::Ceil) => 3,
                },
                fa: scales[0],
                fb: scales[1],
                geo_in_out: [
                    u32_of(node, xs[2])?,
                    u32_of(node, xs[3])?,
                    u32_of(node, size[0])?,
                    u32_of(node, size[1])?,
                ],
                ..Default::default()
            };
            flat(batch, &k.resize, p, count, a, None, o)
        }
        Op::Reduce { kind, axes, .. } => {
            let (first, last) = (axes[0], axes[axes.len() - 1]);
            let len: usize = xs[first..=last].iter().product();
            let inner: usize = xs[last + 1..].iter().product();
            reduce(k, batch, node, *kind, len, inner, count, a, o)
        }
        Op::GlobalMaxPool => {
            let len: usize = xs[2..].iter().product();
            reduce(k, batch, node, ReduceKind::Max, len, 1, count, a, o)
        }
        Op::Lrn(lrn) => {
            let p = FwdParams {
                channels: u32_of(node, xs[1])?,
                inner: u32_of(node, xs[2..].iter().product::<usize>().max(1))?,
                len: u32_of(node, lrn.size)?,
                fa: lrn.alpha,
                fb: lrn.beta,
                fc: lrn.bias,
                ..Default::default()
            };
            flat(batch, &k.lrn, p, count, a, None, o)
        }
        other => Err(node.error(format!("{} is not an NCHW kernel op", other.kind()))),
    }
}

#[allow(clippy::too_many_arguments)]
fn reduce(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    node: &Node,
    kind: ReduceKind,
    len: usize,
    inner: usize,
    count: usize,
    a: (&wgpu::Buffer, u64),
    o: (&wgpu::Buffer, u64),
) -> Result<()> {
    let p = FwdParams {
        op: match kind {
            ReduceKind::Mean => 0,
            ReduceKind::Max => 1,
            ReduceKind::Sum => 2,
        },
        len: u32_of(node, len)?,
        inner: u32_of(node, inner.max(1))?,
        ..Default::default()
    };
    flat(batch, &k.reduce, p, count, a, None, o)
}

/// ConvTranspose; `params` holds the `(C, M/group, kh, kw)` weights then (with `bias`) the bias.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_transpose(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    node: &Node,
    ct: &ConvTranspose,
    x: (&wgpu::Buffer, &[usize]),
    params: (&PooledBuffer, u64),
    bias: bool,
    out: &Rc<PooledBuffer>,
    out_shape: &[usize],
) -> Result<()> {
    let (xb, xs) = x;
    let (win, pads) = (&ct.window, ct.pads());
    let p = FwdParams {
        channels: u32_of(node, xs[1])?,
        inner: u32_of(node, out_shape[1])?,
        len: u32_of(node, ct.group)?,
        flag: bias as u32,
        geo_in_out: [
            u32_of(node, xs[2])?,
            u32_of(node, xs[3])?,
            u32_of(node, out_shape[2])?,
            u32_of(node, out_shape[3])?,
        ],
        geo_kernel_stride: [
            u32_of(node, win.kernel[0])?,
            u32_of(node, win.kernel[1])?,
            u32_of(node, win.strides[0])?,
            u32_of(node, win.strides[1])?,
        ],
        geo_dil_pad: [
            u32_of(node, win.dilations[0])?,
            u32_of(node, win.dilations[1])?,
            u32_of(node, pads[0])?,
            u32_of(node, pads[1])?,
        ],
        ..Default::default()
    };
    flat(
        batch,
        &k.conv_transpose,
        p,
        out_shape.iter().product(),
        (xb, bytes(xs)),
        Some((&**params.0, params.1)),
        (out, bytes(out_shape)),
    )
}
