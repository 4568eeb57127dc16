//! Conv (all but depthwise), Gemm and MatMul on the tiled implicit-GEMM kernel of
//! `shaders/conv.wgsl`: weights transposed per group and im2col tables built once per node, an
//! epilogue `act(acc · scale + shift)` per output channel that carries the bias, Gemm's `alpha`
//! and `beta · C`, and a BatchNorm and activation that follow the product when nothing else
//! reads the intermediate values.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};

use super::{upload, upload_pod, Batch, Prepared};
use crate::error::Result;
use crate::gpu::{
    bind_group_layout, checked_shaders, shader_module, shaders, tiled_pipeline, Gpu, PadFrame,
    PadKernel, PooledBuffer, Slot,
};
use crate::ir::{Conv, Graph, Node, Op, Unary, ValueId};

/// Split-K aims for this many workgroups when the output tiles are fewer.
const SPLIT_TARGET_WORKGROUPS: u64 = 512;
/// Most K slices.
const MAX_SPLITS: u32 = 64;
/// Most bytes of split-K partial sums of one node.
const SPLIT_MEMORY_BUDGET: u64 = 128 << 20;

/// The parameter block of `conv_gemm` (`ConvParams` in conv.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    /// GEMM columns of the batch (images · positions).
    pub total: u32,
    /// First column of this dispatch.
    pub col0: u32,
    /// Output positions per image.
    pub positions: u32,
    /// Output channels per group.
    pub m_group: u32,
    /// Output channels in all.
    pub m_total: u32,
    /// Reduction length.
    pub k: u32,
    /// Input values per (padded) image.
    pub image_len: u32,
    /// Input values per group of channels (padded planes).
    pub group_len: u32,
    /// 1: dense rows.
    pub dense: u32,
    /// Epilogue activation: forward.wgsl's unary code + 1, 0 for none.
    pub act: u32,
    /// First activation parameter.
    pub act_a: f32,
    /// Second activation parameter.
    pub act_b: f32,
    /// K slices (1: no split-K).
    pub splits: u32,
    /// K rows per slice (a multiple of the staged rows).
    pub k_split: u32,
}

/// The compiled `conv_gemm` kernel, one pipeline per tile shape (compiled on first use).
pub(super) struct GemmKernels {
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    tiles: Mutex<HashMap<(u32, u32, u32), wgpu::ComputePipeline>>,
    reduce: wgpu::ComputePipeline,
    pad: PadKernel,
}

impl GemmKernels {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = bind_group_layout(
            device,
            "conv_gemm",
            &[
                Slot::Params,
                Slot::Read,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::Read,
                Slot::Read,
            ],
        );
        let module = shader_module(device, "conv.wgsl", shaders::CONV, checked_shaders());
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("conv.wgsl"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let flat = |entry: &str| tiled_pipeline(device, &pipeline_layout, &module, entry, [8; 3]);
        let reduce = flat("reduce_splits");
        let pad = PadKernel::new(device, checked_shaders());
        Self {
            pipeline_layout,
            module,
            tiles: Mutex::new(HashMap::new()),
            reduce,
            pad,
        }
    }

    /// The kernel for `wm × wn` threads (tile `8·wm × 8·wn`) staging `bk` rows per step.
    fn pipeline(&self, device: &wgpu::Device, wm: u32, wn: u32, bk: u32) -> wgpu::ComputePipeline {
        let mut tiles = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        tiles
            .entry((wm, wn, bk))
            .or_insert_with(|| {
                tiled_pipeline(
                    device,
                    &self.pipeline_layout,
                    &self.module,
                    "conv_gemm",
                    [wm, wn, bk],
                )
            })
            .clone()
    }
}

/// The last unary code conv.wgsl's epilogue knows (as code + 1): later activations run apart.
pub(super) const LAST_FUSED_UNARY: u32 = 5;

/// The unary op codes of forward.wgsl and their two float parameters.
pub(super) fn unary_code(u: Unary) -> (u32, f32, f32) {
    match u {
        Unary::Relu => (0, 0.0, 0.0),
        Unary::LeakyRelu { alpha } => (1, alpha, 0.0),
        Unary::Clip { min, max } => (2, min, max),
        Unary::Sigmoid => (3, 0.0, 0.0),
        Unary::HardSigmoid { alpha, beta } => (4, alpha, beta),
        Unary::HardSwish => (5, 0.0, 0.0),
        Unary::Tanh => (7, 0.0, 0.0),
        Unary::Exp => (8, 0.0, 0.0),
        Unary::Softplus => (9, 0.0, 0.0),
        Unary::Sqrt => (10, 0.0, 0.0),
        Unary::Erf => (11, 0.0, 0.0),
        Unary::Pow { exponent } => (12, exponent, 0.0),
    }
}

/// A node on the GEMM kernel, prepared.
pub(super) struct GemmNode {
    /// Weights, per group K × m_group (k-major).
    weight: PooledBuffer,
    weight_bytes: u64,
    /// scale and shift on the host until [`Self::upload_epilogue`].
    scale: Vec<f32>,
    shift: Vec<f32>,
    epilogue: Option<PooledBuffer>,
    /// im2col tables (one dummy entry in dense mode).
    columns: PooledBuffer,
    columns_bytes: u64,
    offsets: PooledBuffer,
    offsets_bytes: u64,
    groups: u32,
    m_group: u32,
    m_total: u32,
    k: u32,
    dense: bool,
    /// Conv: input (C, H, W) and output positions.
    input: [usize; 3],
    positions: u32,
    /// Conv: the padded plane the kernel reads, `(Hp, Wp, pad_top, pad_left)`; `None` when the
    /// conv does not pad (the input is read as it is).
    padding: Option<[usize; 4]>,
    /// Epilogue activation (code + 1, a, b).
    act: (u32, f32, f32),
}

impl GemmNode {
    /// A convolution.
    pub(super) fn conv(
        gpu: &Arc<Gpu>,
        g: &Graph,
        node: &Node,
        conv: &Conv,
        x: &[usize],
    ) -> Result<Self> {
        let w = g
            .constant(node.input(1)?)
            .ok_or_else(|| node.error("the weight must be a constant"))?;
        let wd = w
            .f32()
            .ok_or_else(|| node.error("the weight must be float data"))?;
        let (c, h, wi) = (x[1], x[2], x[3]);
        let m = w.dims[0];
        let groups = conv.group.max(1);
        let (cg, mg) = (c / groups, m / groups);
        let [kh, kw] = conv.window.kernel;
        let k = cg * kh * kw;
        if w.dims.len() != 4 || w.dims[1] != cg || c % groups != 0 || m % groups != 0 {
            return Err(node.error(format!(
                "weight {:?} does not fit {c} input channels in {groups} groups",
                w.dims
            )));
        }
        let (pads, out) = conv
            .window
            .resolve(h, wi)
            .map_err(|reason| node.error(reason))?;
        // Per group, Wᵀ: K × m_group.
        let mut wt = vec![0.0f32; m * k];
        for gi in 0..groups {
            for mi in 0..mg {
                let row = &wd[(gi * mg + mi) * k..][..k];
                for (ki, &v) in row.iter().enumerate() {
                    wt[gi * k * mg + ki * mg + mi] = v;
                }
            }
        }
        let [dh, dw] = conv.window.dilations;
        let [sh, sw] = conv.window.strides;
        // The plane the reads span, from the first padding row and column on: the input framed
        // by its zeros (a read past the bottom or right edge reads a zero of the frame).
        let hp = (pads[0] + h).max(out[0].saturating_sub(1) * sh + (kh - 1) * dh + 1);
        let wp = (pads[1] + wi).max(out[1].saturating_sub(1) * sw + (kw - 1) * dw + 1);
        let padding = (hp, wp) != (h, wi) || pads[0] > 0 || pads[1] > 0;
        if c * hp * wp > u32::MAX as usize {
            return Err(node.error("the padded input is too large for the GPU kernels"));
        }
        let mut columns: Vec<u32> = Vec::with_capacity(k);
        for ci in 0..cg {
            for i in 0..kh {
                for j in 0..kw {
                    columns.push((ci * hp * wp + i * dh * wp + j * dw) as u32);
                }
            }
        }
        let mut offsets: Vec<u32> = Vec::with_capacity(out[0] * out[1]);
        for oy in 0..out[0] {
            for ox in 0..out[1] {
                offsets.push((oy * sh * wp + ox * sw) as u32);
            }
        }
        let shift = match node.inputs.get(2).copied().flatten() {
            Some(b) => g
                .constant(b)
                .and_then(|c| c.f32())
                .ok_or_else(|| node.error("the bias must be a float constant"))?
                .to_vec(),
            None => vec![0.0; m],
        };
        Ok(Self {
            weight: upload(gpu, &node.name, &wt)?,
            weight_bytes: 4 * wt.len() as u64,
            scale: vec![1.0; m],
            shift,
            epilogue: None,
            columns: upload_pod(gpu, "im2col columns", &columns)?,
            columns_bytes: 4 * columns.len() as u64,
            offsets: upload_pod(gpu, "im2col offsets", &offsets)?,
            offsets_bytes: 4 * offsets.len() as u64,
            groups: groups as u32,
            m_group: mg as u32,
            m_total: m as u32,
            k: k as u32,
            dense: false,
            input: [c, h, wi],
            positions: (out[0] * out[1]) as u32,
            padding: padding.then_some([hp, wp, pads[0], pads[1]]),
            act: (0, 0.0, 0.0),
        })
    }

    /// Gemm (`alpha · A · op(B) + beta · C`, C a constant vector or scalar) or MatMul (B a
    /// constant matrix).
    pub(super) fn dense(gpu: &Arc<Gpu>, g: &Graph, node: &Node) -> Result<Self> {
        let b_id = node.input(1)?;
        let b = g.constant(b_id).ok_or_else(|| {
            node.error("on the GPU the right operand must be a constant (a weight)")
        })?;
        let bd = b
            .f32()
            .ok_or_else(|| node.error("the right operand must be float data"))?;
        if b.dims.len() != 2 {
            return Err(node.error(format!(
                "the right operand must be a matrix, got {:?}",
                b.dims
            )));
        }
        let (trans_b, alpha, beta) = match &node.op {
            Op::Gemm(gm) => (gm.trans_b, gm.alpha, gm.beta),
            _ => (false, 1.0, 0.0),
        };
        let (k, m) = if trans_b {
            (b.dims[1], b.dims[0])
        } else {
            (b.dims[0], b.dims[1])
        };
        let wt: Vec<f32> = if trans_b {
            let mut t = vec![0.0; k * m];
            for mi in 0..m {
                for ki in 0..k {
                    t[ki * m + mi] = bd[mi * k + ki];
                }
            }
            t
        } else {
            bd.to_vec()
        };
        let mut shift = vec![0.0f32; m];
        if let (Op::Gemm(_), Some(c_id)) = (&node.op, node.inputs.get(2).copied().flatten()) {
            if beta != 0.0 {
                let c = g
                    .constant(c_id)
                    .ok_or_else(|| node.error("on the GPU the bias C must be a constant"))?;
                let cd = c
                    .f32()
                    .ok_or_else(|| node.error("the bias C must be float data"))?;
                let per_column = c.dims.iter().rev().skip(1).all(|&d| d == 1)
                    && (cd.len() == m || cd.len() == 1);
                if !per_column {
                    return Err(node.error(format!(
                        "on the GPU the bias C must be a scalar or one value per output \
                         column ({m}), got shape {:?}",
                        c.dims
                    )));
                }
                for (j, s) in shift.iter_mut().enumerate() {
                    *s = beta * cd[if cd.len() == 1 { 0 } else { j }];
                }
            }
        }
        let dummy_columns = [0u32; 4];
        let dummy_offsets = [0u32; 4];
        Ok(Self {
            weight: upload(gpu, &node.name, &wt)?,
            weight_bytes: 4 * wt.len() as u64,
            scale: vec![alpha; m],
            shift,
            epilogue: None,
            columns: upload_pod(gpu, "dense columns", &dummy_columns)?,
            columns_bytes: 16,
            offsets: upload_pod(gpu, "dense offsets", &dummy_offsets)?,
            offsets_bytes: 16,
            groups: 1,
            m_group: m as u32,
            m_total: m as u32,
            k: k as u32,
            dense: true,
            input: [k, 1, 1],
            positions: 1,
            padding: None,
            act: (0, 0.0, 0.0),
        })
    }

    /// Folds the BatchNorm and then the activation that follow this node into its epilogue,
    /// as long as each intermediate value has this chain as its only reader and is not a graph
    /// output. Folded nodes are marked [`Prepared::Fused`]; the intermediate values, whose
    /// device contents are then not what the graph says, go into `hidden`.
    pub(super) fn fuse_following(
        &mut self,
        g: &Graph,
        node: &Node,
        consumers: &[Vec<usize>],
        prepared: &mut [Prepared],
        hidden: &mut HashSet<ValueId>,
    ) {
        if std::env::var("SUBPRUNE_GPU_NO_FUSION").is_ok_and(|v| v == "1") {
            return;
        }
        let mut v = node.outputs[0];
        loop {
            if g.outputs.contains(&v) || consumers[v].len() != 1 {
                return;
            }
            let next = consumers[v][0];
            let nx = &g.nodes[next];
            if nx.inputs.first().copied().flatten() != Some(v)
                || nx.inputs.iter().flatten().filter(|&&i| i == v).count() != 1
            {
                return;
            }
            match &nx.op {
                Op::BatchNorm { epsilon } if self.act.0 == 0 && !self.dense => {
                    let Ok((s, t)) = crate::exec::cpu::batch_norm_affine(g, nx, *epsilon) else {
                        return;
                    };
                    if s.len() != self.scale.len() {
                        return;
                    }
                    for (j, (sc, sh)) in self.scale.iter_mut().zip(&mut self.shift).enumerate() {
                        *sc *= s[j];
                        *sh = *sh * s[j] + t[j];
                    }
                }
                Op::Unary(u) if self.act.0 == 0 && unary_code(*u).0 <= LAST_FUSED_UNARY => {
                    let (code, a, b) = unary_code(*u);
                    self.act = (code + 1, a, b);
                }
                _ => return,
            }
            prepared[next] = Prepared::Fused;
            hidden.insert(v);
            v = nx.outputs[0];
        }
    }

    /// Uploads the (possibly fused) epilogue.
    pub(super) fn upload_epilogue(&mut self, gpu: &Arc<Gpu>, label: &str) -> Result<()> {
        let mut e = self.scale.clone();
        e.extend_from_slice(&self.shift);
        self.epilogue = Some(upload(gpu, label, &e)?);
        Ok(())
    }

    /// Records the product of input `x` (shape `xs`) into `out` (shape `out_shape`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &self,
        kernels: &GemmKernels,
        batch: &mut Batch<'_>,
        node: &Node,
        x: &wgpu::Buffer,
        xs: &[usize],
        out: &Rc<PooledBuffer>,
        out_shape: &[usize],
    ) -> Result<()> {
        let x_len: usize = xs.iter().product();
        let (total, image_len) = if self.dense {
            let k = *xs.last().unwrap_or(&0);
            if k != self.k as usize {
                return Err(node.error(format!(
                    "input {xs:?} has {k} features; the weight takes {}",
                    self.k
                )));
            }
            (x_len / k.max(1), k)
        } else {
            if xs.len() != 4 || xs[1..] != self.input {
                return Err(node.error(format!(
                    "input {xs:?} is not the (N, {}, {}, {}) the node was prepared for",
                    self.input[0], self.input[1], self.input[2]
                )));
            }
            (xs[0] * self.positions as usize, xs[1..].iter().product())
        };
        let out_len: usize = out_shape.iter().product();
        if out_len != total * self.m_total as usize {
            return Err(node.error(format!(
                "output {out_shape:?} does not hold {total} × {} values",
                self.m_total
            )));
        }
        if total > u32::MAX as usize || x_len > i32::MAX as usize || out_len > i32::MAX as usize {
            return Err(node.error("the batch is too large for one dispatch; use a smaller batch"));
        }
        // Tiles of 32, 64 or 128 channels × 64 or 128 columns (conv.wgsl's limits: a thread
        // stages at most 16 values per operand and step).
        let (wm, bk) = match self.m_group {
            0..=32 => (4, 8),
            33..=64 => (8, 16),
            _ => (16, 16),
        };
        let wn = if total <= 64 { 8 } else { 16 };
        let (tile_m, tile_n) = (8 * wm, 8 * wn);
        let pipeline = kernels.pipeline(&batch.gpu.device, wm, wn, bk);
        let tiles_n = (total as u32).div_ceil(tile_n);
        let tiles_m = self.m_group.div_ceil(tile_m);
        let max = batch.gpu.limits.max_compute_workgroups_per_dimension;
        let epilogue = self.epilogue.as_ref().expect("uploaded at preparation");
        let (c, h, w) = (self.input[0], self.input[1], self.input[2]);
        // Split-K when the tiles alone would leave most of the device idle and K is long: each
        // slice gets at least 4 staged steps; the slices' partial sums stay within a budget.
        let k_steps = self.k.div_ceil(bk);
        let tiles = tiles_n as u64 * tiles_m as u64 * self.groups as u64;
        let mut splits = if tiles < SPLIT_TARGET_WORKGROUPS {
            ((SPLIT_TARGET_WORKGROUPS / tiles.max(1)) as u32)
                .min(k_steps / 4)
                .clamp(1, MAX_SPLITS)
        } else {
            1
        };
        let budget = SPLIT_MEMORY_BUDGET.min(batch.gpu.max_binding());
        while splits > 1 && splits as u64 * 4 * out_len as u64 > budget {
            splits /= 2;
        }
        let k_split = k_steps.div_ceil(splits) * bk;
        let splits = self.k.div_ceil(k_split).max(1);
        let partial = if splits > 1 {
            Some(batch.alloc(
                &format!("split-K sums of node '{}'", node.name),
                splits as usize * out_len,
            )?)
        } else {
            None
        };
        let target: &wgpu::Buffer = partial.as_deref().unwrap_or(out);
        let target_bytes = 4 * out_len as u64 * splits as u64;
        // A padding conv reads a copy of its input framed by the zeros (the pad pass); dense
        // products never pad.
        let (hp, wp, pad_top, pad_left) = self
            .padding
            .map_or((h, w, 0, 0), |[hp, wp, top, left]| (hp, wp, top, left));
        let padded = match self.padding {
            Some(_) => {
                let len = xs[0] * c * hp * wp;
                if len > u32::MAX as usize {
                    return Err(node.error(
                        "the padded batch is too large for one dispatch; use a smaller batch",
                    ));
                }
                let buffer = batch.alloc(&format!("padded input of node '{}'", node.name), len)?;
                let frame = PadFrame {
                    channels: c,
                    height: h,
                    width: w,
                    padded_height: hp,
                    padded_width: wp,
                    top: pad_top,
                    left: pad_left,
                };
                let params = frame.params(xs[0], false).map_err(|_| {
                    node.error(
                        "the padded batch is too large for one dispatch; use a smaller batch",
                    )
                })?;
                let groups = PadKernel::grid(batch.gpu, params.count);
                batch.dispatch(
                    &kernels.pad.pipeline,
                    bytemuck::bytes_of(&params),
                    &[(x, 4 * x_len as u64), (&buffer, 4 * len as u64)],
                    (groups.0, groups.1, 1),
                )?;
                Some((buffer, len))
            }
            None => None,
        };
        let (x, x_len) = match &padded {
            Some((buffer, len)) => (&***buffer, *len),
            None => (x, x_len),
        };
        let mut params = ConvParams {
            total: total as u32,
            col0: 0,
            positions: self.positions,
            m_group: self.m_group,
            m_total: self.m_total,
            k: self.k,
            image_len: if self.dense { image_len } else { c * hp * wp } as u32,
            group_len: if self.dense {
                0
            } else {
                ((c / self.groups as usize) * hp * wp) as u32
            },
            dense: self.dense as u32,
            act: self.act.0,
            act_a: self.act.1,
            act_b: self.act.2,
            splits,
            k_split,
        };
        let mut first_tile = 0u32;
        while first_tile < tiles_n {
            let count = (tiles_n - first_tile).min(max);
            params.col0 = first_tile * tile_n;
            batch.dispatch(
                &pipeline,
                bytemuck::bytes_of(&params),
                &[
                    (x, 4 * x_len as u64),
                    (&self.weight, self.weight_bytes),
                    (epilogue, 8 * self.m_total as u64),
                    (target, target_bytes),
                    (&self.columns, self.columns_bytes),
                    (&self.offsets, self.offsets_bytes),
                ],
                (count, tiles_m, self.groups * splits),
            )?;
            first_tile += count;
        }
        if let Some(partial) = partial {
            params.col0 = 0;
            let groups = batch.gpu.grid((out_len as u32).div_ceil(256));
            batch.dispatch(
                &kernels.reduce,
                bytemuck::bytes_of(&params),
                &[
                    (&partial, target_bytes),
                    (&self.weight, self.weight_bytes),
                    (epilogue, 8 * self.m_total as u64),
                    (out, 4 * out_len as u64),
                    (&self.columns, self.columns_bytes),
                    (&self.offsets, self.offsets_bytes),
                ],
                (groups.0, groups.1, 1),
            )?;
            batch.recycle(partial);
        }
        if let Some((buffer, _)) = padded {
            batch.recycle(buffer);
        }
        Ok(())
    }
}
