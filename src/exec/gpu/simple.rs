//! The simple kernels of the forward pass (`shaders/forward.wgsl`): element-wise ops with
//! broadcasting, activations, per-channel affine (BatchNorm), depthwise conv, pooling, Slice,
//! Pad, Softmax and the parts of a Concat, one thread per output element (or plane, or softmax
//! group).

use std::rc::Rc;

use bytemuck::{Pod, Zeroable};

use super::gemm::unary_code;
use super::Batch;
use crate::error::Result;
use crate::gpu::{bind_group_layout, pipelines, PooledBuffer, Slot};
use crate::ir::{shape, Binary, Conv, Node, Op, PadMode, PoolKind, Window};

const SOURCE: &str = include_str!("../../../shaders/forward.wgsl");

/// Threads per workgroup (`FLAT_THREADS` in forward.wgsl).
const FLAT_THREADS: u32 = 256;
/// Largest rank of the broadcast, gather and pad kernels (`MAX_RANK` in forward.wgsl).
pub const MAX_RANK: usize = 8;

/// The parameter block of every forward.wgsl kernel (`FwdParams`, field for field).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct FwdParams {
    /// Threads that do work.
    pub count: u32,
    /// Op code.
    pub op: u32,
    /// Rank of the output.
    pub rank: u32,
    /// Channels.
    pub channels: u32,
    /// Inner size.
    pub inner: u32,
    /// Length.
    pub len: u32,
    /// Offset.
    pub offset: i32,
    /// Flags.
    pub flag: u32,
    /// First float parameter.
    pub fa: f32,
    /// Second float parameter.
    pub fb: f32,
    /// Third float parameter.
    pub fc: f32,
    /// Padding.
    pub pad: u32,
    /// Input (h, w), output (h, w).
    pub geo_in_out: [u32; 4],
    /// Kernel (h, w), strides (h, w).
    pub geo_kernel_stride: [u32; 4],
    /// Dilations (h, w), pads (top, left).
    pub geo_dil_pad: [u32; 4],
    /// Pads (bottom, right), unused.
    pub geo_pad_end: [u32; 4],
    /// Output dimensions.
    pub dims: [u32; 8],
    /// Strides of a / source steps / input dims.
    pub sa: [i32; 8],
    /// Strides of b / begin pads.
    pub sb: [i32; 8],
}

/// The compiled forward.wgsl kernels.
pub(super) struct SimpleKernels {
    unary: wgpu::ComputePipeline,
    affine: wgpu::ComputePipeline,
    binary: wgpu::ComputePipeline,
    gather: wgpu::ComputePipeline,
    pad: wgpu::ComputePipeline,
    pool: wgpu::ComputePipeline,
    global_average: wgpu::ComputePipeline,
    depthwise: wgpu::ComputePipeline,
    softmax: wgpu::ComputePipeline,
    copy_into: wgpu::ComputePipeline,
    pub(super) reduce: wgpu::ComputePipeline,
    pub(super) lrn: wgpu::ComputePipeline,
    pub(super) resize: wgpu::ComputePipeline,
    pub(super) conv_transpose: wgpu::ComputePipeline,
}

impl SimpleKernels {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = bind_group_layout(
            device,
            "forward",
            &[Slot::Params, Slot::Read, Slot::Read, Slot::ReadWrite],
        );
        let [unary, affine, binary, gather, pad, pool, global_average, depthwise, softmax, copy_into, reduce, lrn, resize, conv_transpose] =
            pipelines(
                device,
                "forward.wgsl",
                SOURCE,
                &layout,
                [
                    "unary",
                    "affine",
                    "binary",
                    "gather",
                    "pad",
                    "pool",
                    "global_average",
                    "depthwise",
                    "softmax",
                    "copy_into",
                    "reduce",
                    "lrn",
                    "resize",
                    "conv_transpose",
                ],
            );
        Self {
            unary,
            affine,
            binary,
            gather,
            pad,
            pool,
            global_average,
            depthwise,
            softmax,
            copy_into,
            reduce,
            lrn,
            resize,
            conv_transpose,
        }
    }
}

/// Records `pipeline` over `threads` threads reading `a` (and `b`), writing `out`.
pub(super) fn flat(
    batch: &mut Batch<'_>,
    pipeline: &wgpu::ComputePipeline,
    mut params: FwdParams,
    threads: usize,
    a: (&wgpu::Buffer, u64),
    b: Option<(&wgpu::Buffer, u64)>,
    out: (&wgpu::Buffer, u64),
) -> Result<()> {
    if threads == 0 {
        return Ok(());
    }
    params.count = threads as u32;
    let groups = batch.gpu.grid((threads as u32).div_ceil(FLAT_THREADS));
    let b = b.unwrap_or(a);
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        &[a, b, out],
        (groups.0, groups.1, 1),
    )
}

pub(super) fn bytes(shape: &[usize]) -> u64 {
    4 * shape.iter().product::<usize>() as u64
}

pub(super) fn check_rank(node: &Node, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(node.error(format!(
            "rank {} is above the GPU kernels' {MAX_RANK}",
            shape.len()
        )));
    }
    Ok(())
}

/// Window geometry of a pool or depthwise conv on input `xs`.
pub(super) fn window_params(
    node: &Node,
    window: &Window,
    xs: &[usize],
    out_shape: &[usize],
) -> Result<FwdParams> {
    let (pads, out) = window
        .resolve(xs[2], xs[3])
        .map_err(|reason| node.error(reason))?;
    debug_assert_eq!(&out_shape[2..], &out[..]);
    Ok(FwdParams {
        geo_in_out: [xs[2] as u32, xs[3] as u32, out[0] as u32, out[1] as u32],
        geo_kernel_stride: [
            window.kernel[0] as u32,
            window.kernel[1] as u32,
            window.strides[0] as u32,
            window.strides[1] as u32,
        ],
        geo_dil_pad: [
            window.dilations[0] as u32,
            window.dilations[1] as u32,
            pads[0] as u32,
            pads[1] as u32,
        ],
        geo_pad_end: [pads[2] as u32, pads[3] as u32, 0, 0],
        ..Default::default()
    })
}

/// Depthwise conv; `params` holds the weights then (with `bias`) the bias.
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    node: &Node,
    conv: &Conv,
    x: &wgpu::Buffer,
    xs: &[usize],
    params: &PooledBuffer,
    bias: bool,
    out: &Rc<PooledBuffer>,
    out_shape: &[usize],
) -> Result<()> {
    let mut p = window_params(node, &conv.window, xs, out_shape)?;
    p.channels = xs[1] as u32;
    p.flag = bias as u32;
    let weights =
        xs[1] * conv.window.kernel[0] * conv.window.kernel[1] + if bias { xs[1] } else { 0 };
    flat(
        batch,
        &k.depthwise,
        p,
        out_shape.iter().product(),
        (x, bytes(xs)),
        Some((params, 4 * weights as u64)),
        (out, bytes(out_shape)),
    )
}

/// Per-channel affine (a BatchNorm): `params` holds the scales then the shifts.
pub(super) fn affine(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    x: &wgpu::Buffer,
    xs: &[usize],
    params: &PooledBuffer,
    out: &Rc<PooledBuffer>,
    count: usize,
) -> Result<()> {
    let p = FwdParams {
        channels: xs[1] as u32,
        inner: xs[2..].iter().product::<usize>().max(1) as u32,
        ..Default::default()
    };
    flat(
        batch,
        &k.affine,
        p,
        count,
        (x, bytes(xs)),
        Some((params, 8 * xs[1] as u64)),
        (out, bytes(xs)),
    )
}

/// Row-major strides of `shape` aligned to the last axes of a rank-`rank` output, 0 on axes
/// of size 1 (broadcast).
fn broadcast_strides(shape: &[usize], rank: usize) -> [i32; MAX_RANK] {
    let st = super::super::kernels::strides(shape);
    let mut out = [0i32; MAX_RANK];
    for (i, o) in out.iter_mut().enumerate().take(rank) {
        if let Some(j) = (i + shape.len()).checked_sub(rank) {
            if shape[j] != 1 {
                *o = st[j] as i32;
            }
        }
    }
    out
}

pub(super) fn dims(shape: &[usize]) -> [u32; MAX_RANK] {
    let mut d = [1u32; MAX_RANK];
    for (o, &s) in d.iter_mut().zip(shape) {
        *o = s as u32;
    }
    d
}

/// Broadcast binary op.
#[allow(clippy::too_many_arguments)]
pub(super) fn binary(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    node: &Node,
    op: Binary,
    a: (&wgpu::Buffer, &[usize]),
    b: (&wgpu::Buffer, &[usize]),
    out: &Rc<PooledBuffer>,
    out_shape: &[usize],
) -> Result<()> {
    check_rank(node, out_shape)?;
    let rank = out_shape.len();
    let p = FwdParams {
        op: match op {
            Binary::Add => 0,
            Binary::Sub => 1,
            Binary::Mul => 2,
            Binary::Div => 3,
            Binary::Max => 4,
            Binary::Min => 5,
        },
        rank: rank as u32,
        dims: dims(out_shape),
        sa: broadcast_strides(a.1, rank),
        sb: broadcast_strides(b.1, rank),
        ..Default::default()
    };
    flat(
        batch,
        &k.binary,
        p,
        out_shape.iter().product(),
        (a.0, bytes(a.1)),
        Some((b.0, bytes(b.1))),
        (out, bytes(out_shape)),
    )
}

/// One part of a Concat: `outer` rows of `row` values into rows of `out_row` at `offset`.
#[allow(clippy::too_many_arguments)]
pub(super) fn copy_into(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    part: &wgpu::Buffer,
    outer: usize,
    row: usize,
    out_row: usize,
    offset: usize,
    out: &Rc<PooledBuffer>,
    out_bytes: u64,
) -> Result<()> {
    let p = FwdParams {
        inner: row.max(1) as u32,
        len: out_row as u32,
        offset: offset as i32,
        ..Default::default()
    };
    flat(
        batch,
        &k.copy_into,
        p,
        outer * row,
        (part, 4 * (outer * row) as u64),
        None,
        (out, out_bytes),
    )
}

/// The one-input ops: pools, activations, Slice, Expand, Pad, Softmax.
pub(super) fn run(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    node: &Node,
    x: (&wgpu::Buffer, &[usize]),
    out: &Rc<PooledBuffer>,
    out_shape: &[usize],
) -> Result<()> {
    let (xb, xs) = x;
    let count: usize = out_shape.iter().product();
    let a = (xb, bytes(xs));
    let o = (&***out, bytes(out_shape));
    match &node.op {
        Op::Pool { kind, window } => {
            let mut p = window_params(node, window, xs, out_shape)?;
            match kind {
                PoolKind::Max => p.op = 0,
                PoolKind::Average { count_include_pad } => {
                    p.op = 1;
                    p.flag = *count_include_pad as u32;
                }
            }
            flat(batch, &k.pool, p, count, a, None, o)
        }
        Op::GlobalAveragePool => {
            let p = FwdParams {
                len: xs[2..].iter().product::<usize>() as u32,
                ..Default::default()
            };
            flat(batch, &k.global_average, p, xs[0] * xs[1], a, None, o)
        }
        Op::Unary(u) => {
            let (op, fa, fb) = unary_code(*u);
            let p = FwdParams {
                op,
                fa,
                fb,
                ..Default::default()
            };
            flat(batch, &k.unary, p, count, a, None, o)
        }
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity => {
            // Only when the input is a constant (activations are shared, not copied).
            let p = FwdParams {
                op: 6,
                ..Default::default()
            };
            flat(batch, &k.unary, p, count, a, None, o)
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            check_rank(node, xs)?;
            let st = super::super::kernels::strides(xs);
            let mut step: Vec<i64> = st.iter().map(|&s| s as i64).collect();
            let mut offset = 0i64;
            for (i, &ax) in axes.iter().enumerate() {
                let (first, _) = shape::slice_range(xs[ax], starts[i], ends[i], steps[i]);
                offset += first * st[ax] as i64;
                step[ax] = steps[i] * st[ax] as i64;
            }
            let mut sa = [0i32; MAX_RANK];
            for (o, s) in sa.iter_mut().zip(&step) {
                *o = i32::try_from(*s).map_err(|_| node.error("slice step out of range"))?;
            }
            let p = FwdParams {
                rank: out_shape.len() as u32,
                dims: dims(out_shape),
                sa,
                offset: i32::try_from(offset)
                    .map_err(|_| node.error("slice offset out of range"))?,
                ..Default::default()
            };
            flat(batch, &k.gather, p, count, a, None, o)
        }
        Op::Expand { .. } => {
            // A strided copy with stride 0 on the broadcast axes.
            check_rank(node, out_shape)?;
            let p = FwdParams {
                rank: out_shape.len() as u32,
                dims: dims(out_shape),
                sa: broadcast_strides(xs, out_shape.len()),
                ..Default::default()
            };
            flat(batch, &k.gather, p, count, a, None, o)
        }
        Op::Pad { mode, pads, value } => {
            check_rank(node, xs)?;
            let mut sa = [0i32; MAX_RANK];
            let mut sb = [0i32; MAX_RANK];
            for (i, &d) in xs.iter().enumerate() {
                sa[i] = d as i32;
                sb[i] = i32::try_from(pads[i]).map_err(|_| node.error("pad out of range"))?;
            }
            let p = FwdParams {
                op: match mode {
                    PadMode::Constant => 0,
                    PadMode::Reflect => 1,
                    PadMode::Edge => 2,
                },
                rank: out_shape.len() as u32,
                dims: dims(out_shape),
                sa,
                sb,
                fa: *value,
                ..Default::default()
            };
            flat(batch, &k.pad, p, count, a, None, o)
        }
        Op::Softmax { axis, coerce_2d } => {
            let outer: usize = xs[..*axis].iter().product();
            let (len, inner) = if *coerce_2d {
                (xs[*axis..].iter().product(), 1)
            } else {
                (xs[*axis], xs[*axis + 1..].iter().product())
            };
            if len == 0 {
                return Ok(());
            }
            let p = FwdParams {
                len: len as u32,
                inner: inner.max(1) as u32,
                ..Default::default()
            };
            flat(batch, &k.softmax, p, outer * inner, a, None, o)
        }
        Op::Transpose { perm } => {
            check_rank(node, xs)?;
            let st = super::super::kernels::strides(xs);
            let mut sa = [0i32; MAX_RANK];
            for (o, &axis) in sa.iter_mut().zip(perm) {
                *o = i32::try_from(st[axis]).map_err(|_| node.error("stride out of range"))?;
            }
            let p = FwdParams {
                rank: out_shape.len() as u32,
                dims: dims(out_shape),
                sa,
                ..Default::default()
            };
            flat(batch, &k.gather, p, count, a, None, o)
        }
        Op::Resize(_) | Op::Reduce { .. } | Op::GlobalMaxPool | Op::Lrn(_) => {
            super::nchw::run(k, batch, node, (a, xs), o, out_shape)
        }
        other => Err(node.error(format!(
            "{} is not supported by the GPU executor",
            other.kind()
        ))),
    }
}

/// Gather at constant `indices` along `axis`: one strided copy when the indices are evenly
/// spaced (one index, `x[:, i]`, `x[..., a:b:s]`), else one strided copy per index into a
/// scratch buffer and from there into its place.
#[allow(clippy::too_many_arguments)]
pub(super) fn gather(
    k: &SimpleKernels,
    batch: &mut Batch<'_>,
    node: &Node,
    x: (&wgpu::Buffer, &[usize]),
    axis: usize,
    indices: &[usize],
    out: &Rc<PooledBuffer>,
    out_bytes: u64,
) -> Result<()> {
    let (xb, xs) = x;
    check_rank(node, xs)?;
    let st = super::super::kernels::strides(xs);
    let to_i32 = |v: i64| i32::try_from(v).map_err(|_| node.error("gather offset out of range"));
    let strided = |batch: &mut Batch<'_>, first: usize, step: i64, n: usize, target| {
        let mut shape = xs.to_vec();
        shape[axis] = n;
        let mut sa = [0i32; MAX_RANK];
        for (o, &s) in sa.iter_mut().zip(&st) {
            *o = to_i32(s as i64)?;
        }
        sa[axis] = to_i32(step * st[axis] as i64)?;
        let p = FwdParams {
            rank: xs.len() as u32,
            dims: dims(&shape),
            sa,
            offset: to_i32((first * st[axis]) as i64)?,
            ..Default::default()
        };
        flat(
            batch,
            &k.gather,
            p,
            shape.iter().product(),
            (xb, bytes(xs)),
            None,
            target,
        )
    };
    let step = match indices {
        [a, b, ..] => *b as i64 - *a as i64,
        _ => 1,
    };
    if indices
        .windows(2)
        .all(|w| w[1] as i64 - w[0] as i64 == step)
    {
        return strided(batch, indices[0], step, indices.len(), (&***out, out_bytes));
    }
    let outer: usize = xs[..axis].iter().product();
    let inner: usize = xs[axis + 1..].iter().product();
    let part = batch.alloc(
        &format!("a gathered part of node '{}'", node.name),
        outer * inner,
    )?;
    for (j, &i) in indices.iter().enumerate() {
        strided(batch, i, 1, 1, (&**part, 4 * (outer * inner) as u64))?;
        let n = indices.len();
        copy_into(
            k,
            batch,
            &part,
            outer,
            inner,
            n * inner,
            j * inner,
            out,
            out_bytes,
        )?;
    }
    Ok(())
}
