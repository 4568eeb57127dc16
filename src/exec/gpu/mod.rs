//! The GPU executor: runs a [`Plan`] on the wgpu device of a [`GpuBackend`], with every
//! activation kept on the device between layers. Per batch: one upload of the images, one
//! command submission (more only when a tap hands a tensor to its consumer), one readback of the
//! graph outputs.
//!
//! * Conv (except depthwise), Gemm and MatMul: the tiled implicit GEMM of `shaders/conv.wgsl`
//!   (`gemm.rs`), with bias, Gemm's scaling and, where cheap, a following BatchNorm and
//!   activation folded into its epilogue.
//! * Everything else: the simple kernels of `shaders/forward.wgsl` (`simple.rs`). Flatten,
//!   Reshape, Identity and Dropout are no-ops on the device (the buffer is shared).
//!
//! Parameters (transposed GEMM weights, folded BatchNorms, im2col tables, constants read as
//! data) are uploaded once, when the executor is built. Activation buffers come from the
//! backend's buffer pool; a buffer freed by the plan is reused by later nodes of the same batch
//! and returned to the pool once the batch has finished, so memory grows with the batch size,
//! not with the number of images.

mod gemm;
mod nchw;
mod simple;

pub use crate::backend::gpu::DeviceTensor;
pub use gemm::ConvParams;
pub use simple::{FwdParams, MAX_RANK};

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use super::{Activation, Executor, Plan, TapSink};
use crate::backend::gpu::GpuBackend;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::gpu::{bind_group, binding, Gpu, OwnedDeviceTensor, PooledBuffer};
use crate::ir::{shape, Node, Op, Shape, ValueId};
use crate::tensor::{Tensor, TensorView};

/// Usage of activation and parameter buffers.
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);
/// Bytes of one parameter slot (every kernel's parameter struct fits).
const PARAM_SLOT: u64 = 256;
/// Parameter slots per uniform buffer of a batch.
const PARAM_SLOTS_PER_BUFFER: usize = 256;

/// What a node needs beyond its op, prepared once.
enum Prepared {
    None,
    /// Conv (not depthwise), Gemm, MatMul on the GEMM kernel.
    Gemm(Box<gemm::GemmNode>),
    /// Depthwise conv: weights then bias.
    Depthwise {
        params: PooledBuffer,
        bias: bool,
    },
    /// BatchNorm as a per-channel affine: scale then shift.
    Affine(PooledBuffer),
    /// ConvTranspose: weights then bias; the bytes bound.
    ConvTranspose {
        params: PooledBuffer,
        bytes: u64,
        bias: bool,
    },
    /// The node was folded into the epilogue of the GEMM before it.
    Fused,
}

/// Runs a plan on a wgpu device; see the [module docs](self).
pub struct GpuExecutor {
    plan: Plan,
    backend: GpuBackend,
    kernels: Arc<Kernels>,
    prepared: Vec<Prepared>,
    /// Float constants read as data (Add's operands, Concat's parts), on the device.
    constants: HashMap<ValueId, PooledBuffer>,
    /// Values whose device contents are not what the graph says because the nodes after them
    /// were folded into their GEMM's epilogue (they cannot be tapped).
    hidden: HashSet<ValueId>,
}

impl std::fmt::Debug for GpuExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuExecutor")
            .field("adapter", &self.backend.adapter_name())
            .field("nodes", &self.plan.steps.len())
            .finish()
    }
}

/// The compiled kernels of the forward pass: compiled by the first executor on a device and
/// shared by every later one ([`Gpu::kernels`]), since compiling them takes longer than a small
/// layer's forward pass (the sequential pipeline builds two executors per layer).
struct Kernels {
    simple: simple::SimpleKernels,
    gemm: gemm::GemmKernels,
}

/// Uploads `data` to a new device buffer, or says that a kernel could not bind it whole (the
/// device's largest storage binding; a 9216 × 4096 fully connected weight is above wgpu's
/// default 128 MiB).
fn upload(gpu: &Arc<Gpu>, label: &str, data: &[f32]) -> Result<PooledBuffer> {
    let bytes = 4 * data.len() as u64;
    if bytes > gpu.max_binding() {
        return Err(Error::Gpu(format!(
            "'{label}': {bytes} bytes of parameters are more than the device's largest buffer \
             binding ({} bytes) on {}; run this model on the CPU executor",
            gpu.max_binding(),
            gpu.info.name
        )));
    }
    let buffer = gpu.buffer(label, bytes, STORAGE)?;
    if !data.is_empty() {
        gpu.queue
            .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    }
    Ok(buffer)
}

/// Uploads `data` (any plain values) to a new device buffer.
fn upload_pod<T: bytemuck::Pod>(gpu: &Arc<Gpu>, label: &str, data: &[T]) -> Result<PooledBuffer> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let buffer = gpu.buffer(label, bytes.len() as u64, STORAGE)?;
    if !bytes.is_empty() {
        gpu.queue.write_buffer(&buffer, 0, bytes);
    }
    Ok(buffer)
}

impl GpuExecutor {
    /// Plans `graph` for `backend`'s device, compiles the kernels and uploads the parameters;
    /// an unsupported configuration is an error naming the node.
    pub fn new(graph: &crate::ir::Graph, backend: &GpuBackend) -> Result<Self> {
        // The CPU executor's checks (parameters that must be constants, integer data) first, so
        // that both executors accept and refuse the same graphs.
        super::CpuExecutor::new(graph)?;
        let plan = Plan::new(graph)?;
        let gpu = Arc::clone(&backend.gpu);
        let kernels = gpu.kernels("compiling the GPU forward kernels", |device| Kernels {
            simple: simple::SimpleKernels::new(device),
            gemm: gemm::GemmKernels::new(device),
        })?;
        gpu.scoped("preparing the GPU forward pass", || {
            let g = &plan.graph;
            let mut prepared: Vec<Prepared> = (0..g.nodes.len()).map(|_| Prepared::None).collect();
            let mut constants = HashMap::new();
            let consumers = g.consumers();
            let mut hidden = HashSet::new();
            for step in &plan.steps {
                let node = &g.nodes[step.node];
                if matches!(prepared[step.node], Prepared::Fused) {
                    continue;
                }
                let data_inputs = node.op.data_inputs(node.inputs.len());
                for &id in node.inputs[data_inputs].iter().flatten() {
                    if let (Some(c), false) = (g.constant(id), constants.contains_key(&id)) {
                        let data = c.f32().ok_or_else(|| {
                            node.error(format!(
                                "input '{}' is an integer constant; float data is needed",
                                g.values[id].name
                            ))
                        })?;
                        constants.insert(id, upload(&gpu, &g.values[id].name, data)?);
                    }
                }
                prepared[step.node] = match &node.op {
                    Op::Conv(conv) => {
                        let x = fixed_image_shape(g, node)?;
                        let w = g
                            .constant(node.input(1)?)
                            .expect("checked by the CPU executor");
                        let (c, m) = (x[1], w.dims[0]);
                        if conv.group == c && conv.group == m {
                            let mut params = w.f32().expect("checked").to_vec();
                            let bias = match node.inputs.get(2).copied().flatten() {
                                Some(b) => {
                                    params.extend_from_slice(
                                        g.constant(b).and_then(|c| c.f32()).expect("checked"),
                                    );
                                    true
                                }
                                None => false,
                            };
                            Prepared::Depthwise {
                                params: upload(&gpu, &node.name, &params)?,
                                bias,
                            }
                        } else {
                            let mut gemm = gemm::GemmNode::conv(&gpu, g, node, conv, &x)?;
                            gemm.fuse_following(g, node, &consumers, &mut prepared, &mut hidden);
                            gemm.upload_epilogue(&gpu, &node.name)?;
                            Prepared::Gemm(Box::new(gemm))
                        }
                    }
                    Op::Gemm(_) | Op::MatMul => {
                        let mut gemm = gemm::GemmNode::dense(&gpu, g, node)?;
                        gemm.fuse_following(g, node, &consumers, &mut prepared, &mut hidden);
                        gemm.upload_epilogue(&gpu, &node.name)?;
                        Prepared::Gemm(Box::new(gemm))
                    }
                    Op::ConvTranspose(_) => {
                        let constant = |i: usize| {
                            node.inputs
                                .get(i)
                                .copied()
                                .flatten()
                                .and_then(|v| g.constant(v))
                                .and_then(|c| c.f32())
                        };
                        let mut params = constant(1).expect("checked by the CPU executor").to_vec();
                        let bias = constant(2).map(|b| params.extend_from_slice(b)).is_some();
                        Prepared::ConvTranspose {
                            bytes: 4 * params.len() as u64,
                            params: upload(&gpu, &node.name, &params)?,
                            bias,
                        }
                    }
                    Op::BatchNorm { epsilon } => {
                        let (scale, shift) = super::cpu::batch_norm_affine(g, node, *epsilon)?;
                        let mut params = scale;
                        params.extend(shift);
                        Prepared::Affine(upload(&gpu, &node.name, &params)?)
                    }
                    _ => Prepared::None,
                };
            }
            Ok(Self {
                plan: plan.clone(),
                backend: backend.clone(),
                kernels,
                prepared,
                constants,
                hidden,
            })
        })
    }

    /// The backend this executor runs on.
    pub fn backend(&self) -> &GpuBackend {
        &self.backend
    }
}

/// The shape of one image of a node's data input (`[1, C, H, W]`), which must be fixed but for
/// the batch.
fn fixed_image_shape(g: &crate::ir::Graph, node: &Node) -> Result<Vec<usize>> {
    let shape = &g.values[node.input(0)?].shape;
    if shape.rank() != 4 {
        return Err(node.error(format!("expected an (N, C, H, W) input, got {shape}")));
    }
    Ok(shape.at(1))
}

/// An activation of the current batch on the device.
#[derive(Clone)]
struct DevValue {
    buffer: Rc<PooledBuffer>,
    shape: Vec<usize>,
}

impl DevValue {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
    fn bytes(&self) -> u64 {
        4 * self.len() as u64
    }
}

/// Parameter blocks of one batch: uniform buffers of [`PARAM_SLOT`]-byte slots, selected by
/// dynamic offsets, written before each submission.
struct ParamArena {
    buffers: Vec<(PooledBuffer, Vec<u8>, usize)>,
    stride: u64,
}

impl ParamArena {
    fn new(gpu: &Gpu) -> Self {
        let align = gpu.limits.min_uniform_buffer_offset_alignment as u64;
        Self {
            buffers: Vec::new(),
            stride: PARAM_SLOT.next_multiple_of(align),
        }
    }

    /// Stores `params`; returns (buffer index, dynamic offset).
    fn push(&mut self, gpu: &Arc<Gpu>, params: &[u8]) -> Result<(usize, u32)> {
        debug_assert!(params.len() as u64 <= PARAM_SLOT);
        let full = self.buffers.last().is_none_or(|(_, bytes, _)| {
            bytes.len() as u64 >= self.stride * PARAM_SLOTS_PER_BUFFER as u64
        });
        if full {
            let buffer = gpu.buffer(
                "forward parameters",
                self.stride * PARAM_SLOTS_PER_BUFFER as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )?;
            self.buffers.push((buffer, Vec::new(), 0));
        }
        let index = self.buffers.len() - 1;
        let bytes = &mut self.buffers[index].1;
        let offset = bytes.len();
        bytes.extend_from_slice(params);
        bytes.resize(offset + self.stride as usize, 0);
        Ok((index, offset as u32))
    }

    /// Writes the slots stored since the last flush.
    fn flush(&mut self, queue: &wgpu::Queue) {
        for (buffer, bytes, written) in &mut self.buffers {
            if *written < bytes.len() {
                queue.write_buffer(buffer, *written as u64, &bytes[*written..]);
                *written = bytes.len();
            }
        }
    }
}

/// The state of one batch on the device.
struct Batch<'e> {
    gpu: &'e Arc<Gpu>,
    encoder: Option<wgpu::CommandEncoder>,
    params: ParamArena,
    /// Buffers freed by the plan in this batch: reused by later nodes, returned to the pool when
    /// the batch is over (never earlier: queued work may still read them).
    spare: Vec<PooledBuffer>,
    /// Values of the batch (`None`: not computed yet, freed, or a constant).
    live: Vec<Option<DevValue>>,
}

impl<'e> Batch<'e> {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        let device = &self.gpu.device;
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            })
        })
    }

    /// A buffer for `elements` f32 values, from this batch's spares or the pool.
    fn alloc(&mut self, what: &str, elements: usize) -> Result<Rc<PooledBuffer>> {
        let bytes = (4 * elements as u64).max(16);
        if bytes > self.gpu.max_binding() {
            return Err(Error::Gpu(format!(
                "{what}: {elements} values ({bytes} bytes) are more than the device's largest \
                 buffer binding ({} bytes) on {}; use a smaller batch",
                self.gpu.max_binding(),
                self.gpu.info.name
            )));
        }
        let best = self
            .spare
            .iter()
            .enumerate()
            .filter(|(_, b)| b.size() >= bytes && b.size() <= 2 * bytes.max(4096))
            .min_by_key(|(_, b)| b.size())
            .map(|(i, _)| i);
        let buffer = match best {
            Some(i) => self.spare.swap_remove(i),
            None => self.gpu.buffer("activation", bytes, STORAGE)?,
        };
        Ok(Rc::new(buffer))
    }

    /// Makes a scratch buffer of this batch a spare.
    fn recycle(&mut self, buffer: Rc<PooledBuffer>) {
        if let Ok(buffer) = Rc::try_unwrap(buffer) {
            self.spare.push(buffer);
        }
    }

    /// Drops value `id`; its buffer becomes a spare once no other value shares it.
    fn free(&mut self, id: ValueId) {
        if let Some(v) = self.live[id].take() {
            if let Ok(buffer) = Rc::try_unwrap(v.buffer) {
                self.spare.push(buffer);
            }
        }
    }

    /// Records one dispatch of `pipeline` with `params` and storage `buffers` (each bound from
    /// its start for `size` bytes).
    fn dispatch(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        params: &[u8],
        buffers: &[(&wgpu::Buffer, u64)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let (index, offset) = self.params.push(self.gpu, params)?;
        let layout = pipeline.get_bind_group_layout(0);
        let params_binding = binding(&self.params.buffers[index].0, params.len() as u64);
        let resources = std::iter::once(params_binding)
            .chain(buffers.iter().map(|(buffer, size)| binding(buffer, *size)));
        let group = bind_group(&self.gpu.device, None, &layout, resources);
        let encoder = self.encoder();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &group, &[offset]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        Ok(())
    }

    /// Submits the work recorded so far.
    fn submit(&mut self) {
        self.params.flush(&self.gpu.queue);
        if let Some(encoder) = self.encoder.take() {
            self.gpu.queue.submit([encoder.finish()]);
        }
    }
}

impl GpuExecutor {
    /// The concrete output shape of a node for this batch, by the IR's inference rules.
    fn output_shape(&self, node: &Node, shapes: &[Option<Vec<usize>>]) -> Result<Vec<usize>> {
        let g = &self.plan.graph;
        let in_shapes: Vec<Option<Shape>> =
            node.inputs
                .iter()
                .map(|i| -> Result<Option<Shape>> {
                    match i {
                        None => Ok(None),
                        Some(id) => match (g.constant(*id), &shapes[*id]) {
                            (Some(c), _) => Ok(Some(Shape::fixed(&c.dims))),
                            (None, Some(s)) => Ok(Some(Shape::fixed(s))),
                            (None, None) => Err(node
                                .error(format!("input '{}' was not computed", g.values[*id].name))),
                        },
                    }
                })
                .collect::<Result<_>>()?;
        let n = shapes[self.plan.input].as_ref().map_or(0, |s| s[0]);
        Ok(shape::infer(&node.op, &in_shapes)
            .map_err(|r| node.error(r))?
            .at(n))
    }

    /// The device tensor of input `i` of `node` (an activation of the batch or a constant).
    fn input<'b>(
        &'b self,
        batch: &'b Batch<'_>,
        node: &Node,
        i: usize,
    ) -> Result<(&'b wgpu::Buffer, Vec<usize>)> {
        let g = &self.plan.graph;
        let id = node.input(i)?;
        if let Some(c) = g.constant(id) {
            let buffer = self.constants.get(&id).ok_or_else(|| {
                node.error(format!(
                    "constant input '{}' is not on the device",
                    g.values[id].name
                ))
            })?;
            return Ok((buffer, c.dims.clone()));
        }
        batch.live[id]
            .as_ref()
            .map(|v| (&**v.buffer, v.shape.clone()))
            .ok_or_else(|| node.error(format!("input '{}' was not computed", g.values[id].name)))
    }

    /// Records node `index`; returns its output.
    fn run_node(
        &self,
        batch: &mut Batch<'_>,
        index: usize,
        shapes: &[Option<Vec<usize>>],
    ) -> Result<DevValue> {
        let g = &self.plan.graph;
        let node = &g.nodes[index];
        let out_shape = self.output_shape(node, shapes)?;
        let count: usize = out_shape.iter().product();
        // No-ops on the device: the output shares the input's buffer.
        if matches!(
            node.op,
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity
        ) {
            let id = node.input(0)?;
            if let Some(v) = &batch.live[id] {
                return Ok(DevValue {
                    buffer: Rc::clone(&v.buffer),
                    shape: out_shape,
                });
            }
        }
        let out = batch.alloc(&format!("output of node '{}'", node.name), count)?;
        let out_bytes = 4 * count as u64;
        if count > 0 {
            let k = &self.kernels;
            let (x, xs) = self.input(batch, node, 0)?;
            let x = x.clone();
            match (&node.op, &self.prepared[index]) {
                (Op::Conv(_) | Op::Gemm(_) | Op::MatMul, Prepared::Gemm(gm)) => {
                    gm.record(&k.gemm, batch, node, &x, &xs, &out, &out_shape)?;
                }
                (Op::Conv(conv), Prepared::Depthwise { params, bias }) => {
                    simple::depthwise(
                        &k.simple, batch, node, conv, &x, &xs, params, *bias, &out, &out_shape,
                    )?;
                }
                (
                    Op::ConvTranspose(ct),
                    Prepared::ConvTranspose {
                        params,
                        bytes,
                        bias,
                    },
                ) => {
                    nchw::conv_transpose(
                        &k.simple,
                        batch,
                        node,
                        ct,
                        (&x, &xs),
                        (params, *bytes),
                        *bias,
                        &out,
                        &out_shape,
                    )?;
                }
                (Op::BatchNorm { .. }, Prepared::Affine(params)) => {
                    simple::affine(&k.simple, batch, &x, &xs, params, &out, count)?;
                }
                (Op::Binary(op), _) => {
                    let (y, ys) = self.input(batch, node, 1)?;
                    let y = y.clone();
                    simple::binary(
                        &k.simple,
                        batch,
                        node,
                        *op,
                        (&x, &xs),
                        (&y, &ys),
                        &out,
                        &out_shape,
                    )?;
                }
                (Op::Concat { axis }, _) => {
                    let outer: usize = out_shape[..*axis].iter().product();
                    let out_row: usize = out_shape[*axis..].iter().product();
                    let mut offset = 0;
                    for i in 0..node.inputs.len() {
                        let (part, ps) = self.input(batch, node, i)?;
                        let part = part.clone();
                        let row: usize = ps[*axis..].iter().product();
                        simple::copy_into(
                            &k.simple, batch, &part, outer, row, out_row, offset, &out, out_bytes,
                        )?;
                        offset += row;
                    }
                }
                (Op::Gather { axis, indices, .. }, _) => {
                    let (axis, x) = (*axis, (&x, xs.as_slice()));
                    simple::gather(&k.simple, batch, node, x, axis, indices, &out, out_bytes)?;
                }
                _ => {
                    simple::run(&k.simple, batch, node, (&x, &xs), &out, &out_shape)?;
                }
            }
        }
        Ok(DevValue {
            buffer: out,
            shape: out_shape,
        })
    }
}

impl Executor for GpuExecutor {
    fn name(&self) -> String {
        format!("gpu ({})", self.backend.name())
    }

    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn run_batch(
        &self,
        input: TensorView<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> Result<Vec<Tensor>> {
        self.run_batch_on(Activation::Host(input), taps, on_tap)
    }

    fn upload(&self, input: TensorView<'_>) -> Result<Option<OwnedDeviceTensor>> {
        self.plan.check_batch(&input)?;
        OwnedDeviceTensor::upload(&self.backend.gpu, input).map(Some)
    }

    fn run_batch_on(
        &self,
        input: Activation<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> Result<Vec<Tensor>> {
        self.run(input, taps, on_tap, true)
    }

    fn run_batch_taps(
        &self,
        input: Activation<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> Result<()> {
        self.run(input, taps, on_tap, false).map(drop)
    }
}

impl GpuExecutor {
    /// One batch from `input`; the graph outputs read back when `read_outputs` (else left on
    /// the device, and an empty list returned).
    fn run(
        &self,
        input: Activation<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
        read_outputs: bool,
    ) -> Result<Vec<Tensor>> {
        let g = &self.plan.graph;
        let input_shape = input.shape();
        self.plan.check_batch_shape(input_shape)?;
        // A device input of another device comes through the host.
        let read_back = match input {
            Activation::Device(d) if !Arc::ptr_eq(d.gpu(), &self.backend.gpu) => Some(d.read()?),
            _ => None,
        };
        let input = match &read_back {
            Some(t) => Activation::Host(t.view()),
            None => input,
        };
        // A tap on a value folded into a GEMM epilogue is served by the fused output, which is
        // the same tensor only when nothing was folded after it: refuse the other cases.
        let taps: HashSet<ValueId> = taps.iter().copied().collect();
        for &t in &taps {
            if self.hidden.contains(&t) {
                return Err(Error::InvalidArgument(format!(
                    "value '{}' is folded into the next node's kernel on the GPU and cannot be \
                     tapped; tap the folded node's output instead",
                    g.values[t].name
                )));
            }
        }
        let gpu = &self.backend.gpu;
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; g.values.len()];
        shapes[self.plan.input] = Some(input_shape.to_vec());
        let mut batch = Batch {
            gpu,
            encoder: None,
            params: ParamArena::new(gpu),
            spare: Vec::new(),
            live: vec![None; g.values.len()],
        };
        let result = gpu.scoped("running a batch of the forward pass", || {
            let elements: usize = input_shape.iter().product();
            let x = batch.alloc("the input batch", elements)?;
            match input {
                Activation::Host(h) if !h.data.is_empty() => {
                    gpu.queue.write_buffer(&x, 0, bytemuck::cast_slice(h.data))
                }
                Activation::Device(d) if elements > 0 => {
                    // On this device (checked above): a copy queued before the first node.
                    batch.encoder().copy_buffer_to_buffer(
                        d.buffer(),
                        d.offset(),
                        &x,
                        0,
                        d.byte_len(),
                    );
                }
                _ => {}
            }
            batch.live[self.plan.input] = Some(DevValue {
                buffer: x,
                shape: input_shape.to_vec(),
            });
            if taps.contains(&self.plan.input) {
                on_tap(self.plan.input, input)?;
            }
            for step in &self.plan.steps {
                let node = &g.nodes[step.node];
                let id = node.outputs[0];
                let value = match &self.prepared[step.node] {
                    Prepared::Fused => {
                        // Computed by the GEMM before it: its output stands for this one.
                        let from = node.input(0)?;
                        let v = batch.live[from]
                            .clone()
                            .ok_or_else(|| node.error("the GEMM it is folded into was not run"))?;
                        DevValue {
                            buffer: v.buffer,
                            shape: v.shape,
                        }
                    }
                    _ => self
                        .run_node(&mut batch, step.node, &shapes)
                        .map_err(|e| node.context(e))?,
                };
                shapes[id] = Some(value.shape.clone());
                batch.live[id] = Some(value);
                if taps.contains(&id) {
                    batch.submit();
                    let v = batch.live[id].as_ref().expect("just stored");
                    on_tap(
                        id,
                        Activation::Device(DeviceTensor::new(
                            &v.buffer,
                            &v.shape,
                            0,
                            &self.backend,
                        )),
                    )?;
                }
                for &dead in &step.free_after {
                    batch.free(dead);
                }
            }
            // One readback of every output.
            let mut total = 0u64;
            let mut places = Vec::new();
            for &o in &g.outputs {
                match &batch.live[o] {
                    Some(v) => {
                        places.push(Some((total, v.len())));
                        total += v.bytes();
                    }
                    None => places.push(None),
                }
            }
            let words = if total > 0 && read_outputs {
                let staging = gpu.buffer(
                    "forward readback",
                    total,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                )?;
                for (&o, place) in g.outputs.iter().zip(&places) {
                    let source = batch.live[o].as_ref().map(|v| Rc::clone(&v.buffer));
                    if let (Some((at, len)), Some(source)) = (place, source) {
                        if *len > 0 {
                            let bytes = 4 * *len as u64;
                            batch
                                .encoder()
                                .copy_buffer_to_buffer(&source, 0, &staging, *at, bytes);
                        }
                    }
                }
                batch.params.flush(&gpu.queue);
                let encoder = batch.encoder.take().unwrap_or_else(|| {
                    gpu.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
                });
                gpu.submit_and_read(encoder, &staging, total, "reading the outputs back")?
            } else {
                batch.submit();
                if !read_outputs {
                    return Ok(Vec::new());
                }
                Vec::new()
            };
            let values: &[f32] = bytemuck::cast_slice(&words);
            g.outputs
                .iter()
                .zip(&places)
                .map(|(&o, place)| match (place, g.constant(o)) {
                    (Some((at, len)), _) => {
                        let at = (*at / 4) as usize;
                        Tensor::new(
                            shapes[o].clone().unwrap_or_default(),
                            values[at..at + len].to_vec(),
                        )
                    }
                    (None, Some(c)) => Tensor::new(c.dims.clone(), c.f32().unwrap_or(&[]).to_vec()),
                    (None, None) => Err(Error::InvalidArgument(format!(
                        "graph output '{}' was not computed",
                        g.values[o].name
                    ))),
                })
                .collect()
        });
        // Unfinished work (after an error) must not read buffers returned to the pool.
        if result.is_err() {
            let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
        }
        result
    }
}
