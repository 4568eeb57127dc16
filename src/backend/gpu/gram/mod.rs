//! Gram statistics on the GPU (`shaders/gram.wgsl`): `BᵀB`, and `AᵀB`, `AᵀA` for a separate
//! target, accumulated batch by batch with the unfolding done in the shader, then `C0 = X·W` and
//! `‖AW‖²` computed where the sums live.
//!
//! Per batch the host uploads the raw consumer inputs (f32, or f16 packed two per u32), in chunks
//! of whole images that fit one binding (device-resident activations are copied on the device
//! instead). Per chunk, the pad pass (`shaders/pad.wgsl`) writes them as the f32 operand the tile
//! kernel reads (conv planes framed by their zero padding, f16 widened; skipped for f32 inputs
//! that need neither),
//! then the tiled matmul core runs once per sum and column block; nothing is read back until
//! [`StatsAccumulator::finish_with_weight`], which adds the row splits, writes each sum as one f32
//! matrix, multiplies it by `W` on the device with the same core, and reads back `C0`
//! (compensated pairs) and `G`'s diagonal in one copy, leaving `G` on the device.
//!
//! Precision: each thread sums at most `FOLD_ROWS` = 4096 unfolded rows in f32 registers (the
//! CPU backend sums 8192 rows in f32 before flushing to f64), then folds them into a compensated
//! (hi, lo) f32 pair with an error-free TwoSum. The pair carries about 48 significant bits, so the
//! error does not grow with the number of batches. The final `G` is `hi + lo` rounded once to
//! f32 (a relative change of at most 2⁻²⁴, below the error of the f32 partial sums); `C0` keeps
//! the pair, so `‖AW‖²` and the gains see products of the f32 statistics summed without growth.
//!
//! Work split: the result is cut into TILE × TILE tiles (only upper tiles for a symmetric sum)
//! and the batch's rows into row splits with separate accumulator slices (split-K), chosen so
//! that a small D still yields enough workgroups for the adapter. A result larger than the
//! device's largest binding (or [`GpuBackend::with_max_block_bytes`](crate::backend::gpu::GpuBackend::with_max_block_bytes))
//! is cut into column blocks, each its own buffer and dispatch; then the sums are read back as
//! pairs and `C0`, `‖AW‖²` are left to the host.
//!
//! Files, one idea each: `config.rs` (tile configuration, the parameter block), `work.rs` (row
//! splits, column blocks, chunk sizes), `kernels.rs` (the compiled kernels and the per-chunk
//! dispatch), `upload.rs` (operand layout, input buffers, upload and gather of batches),
//! `finish.rs` (split folds, full matrices, `C0`, readback), `project.rs` (the projected form
//! with a target and a known consumer weight: `P = A·W` per chunk, then `Bᵀ P` and `Pᵀ P`).

mod config;
mod finish;
mod kernels;
mod project;
mod upload;
mod work;

pub use config::{GramParams, TileConfig};
pub(crate) use kernels::GramKernels;
pub(crate) use work::GATHER_BYTES;

use std::sync::Arc;
use std::time::Instant;

use half::f16;

use super::Kernels;
use crate::backend::{
    check_stats_batch, check_stats_shapes, StatsAccumulator, StatsPhases, StatsSpec, TargetBatch,
};
use crate::error::{Error, Result};
use crate::gpu::DeviceTensor;
use crate::gpu::{Gpu, PadParams, ParamSlots, PassTimer, PooledBuffer};
use crate::layer::{RawGrams, Unfolding};
use crate::tensor::TensorView;
use upload::Operands;
use work::{
    device_image_bytes, plan_work, target_workgroups, to_u32, ColumnBlock, MAX_CHUNK_BYTES,
};

/// Which sum: the left and right operands of `Lᵀ R`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sum {
    /// `BᵀB`.
    Gram,
    /// `AᵀB` (the transpose of `X = BᵀA`: row k of it is column k of `X`, which is what
    /// `C0 = X·W` reads).
    Cross,
    /// `AᵀA`.
    TargetGram,
    /// `Bᵀ P` with `P = A·W` the target's projection (`D × m`: `C0` itself).
    Projected,
    /// `Pᵀ P` (`m × m`, symmetric): its trace is `‖AW‖²`.
    ProjectedNorm,
}

impl Sum {
    fn symmetric(self) -> bool {
        matches!(self, Sum::Gram | Sum::TargetGram | Sum::ProjectedNorm)
    }

    /// Rows and columns of the result for `d` unfolded columns and `m` consumer outputs.
    fn dims(self, d: u32, m: u32) -> (u32, u32) {
        match self {
            Sum::Gram | Sum::Cross | Sum::TargetGram => (d, d),
            Sum::Projected => (d, m),
            Sum::ProjectedNorm => (m, m),
        }
    }
}

/// One accumulator: a sum and one column block of its result.
#[derive(Clone, Copy, Debug)]
struct AccSlot {
    sum: Sum,
    /// Rows of the sum's result.
    rows: u32,
    block: ColumnBlock,
}

/// Where a batch's input values come from.
#[derive(Clone, Copy)]
enum Source<'s> {
    /// Host memory (the batch's own values, or the part being gathered).
    Host(&'s [f32]),
    /// A buffer on the accumulator's device, from this byte offset (the whole batch: the part
    /// being gathered is addressed by its flat index).
    Device(&'s wgpu::Buffer, u64),
}

/// The statistics of one layer being accumulated on the device.
pub(crate) struct GpuStats {
    gpu: Arc<Gpu>,
    kernels: Arc<Kernels>,
    unfolding: Unfolding,
    d: usize,
    half_inputs: bool,
    config: TileConfig,
    pipeline: wgpu::ComputePipeline,
    /// Row splits planned (the accumulators hold this many slices).
    splits: u32,
    /// Slices cleared so far: the most splits a chunk's dispatch has used.
    cleared_splits: u32,
    blocks: Vec<ColumnBlock>,
    sums: Vec<Sum>,
    /// The accumulators: every column block of each `D × D` sum (`blocks`), one block for each
    /// projected sum; `acc[i]` holds `slots[i]`: `splits × rows × cols` (hi, lo) pairs.
    slots: Vec<AccSlot>,
    acc: Vec<PooledBuffer>,
    /// One parameter slot per accumulator, same indexing as `acc`, then two for the products
    /// and two for the projection.
    params: ParamSlots,
    base: GramParams,
    /// The pad pass's parameters (`count` set per chunk) and their slot.
    pad_base: PadParams,
    pad_params: ParamSlots,
    /// Conv tables (or 16-byte placeholders for a dense consumer) and the unused `full` binding.
    columns: PooledBuffer,
    offsets: PooledBuffer,
    placeholder: PooledBuffer,
    /// Values per image of the operands the tile kernel reads (padded planes for a conv), and
    /// whether the pad pass writes them from the uploaded batch (conv padding, or f16 uploads
    /// to widen); otherwise the uploaded buffers are the operands.
    operand_len: usize,
    padded: bool,
    /// Most images per uploaded chunk (binding and chunk-size limits).
    chunk_images: usize,
    /// Images the input buffers hold, and how many of them are uploaded and not yet summed.
    capacity_images: usize,
    pending_images: usize,
    gather_bytes: u64,
    /// The uploaded batches (inputs, and targets with a target).
    inputs: Option<PooledBuffer>,
    targets: Option<PooledBuffer>,
    /// The pad pass's outputs, when `padded`.
    padded_inputs: Option<PooledBuffer>,
    padded_targets: Option<PooledBuffer>,
    /// Same indexing as `acc`; built when the input buffers are (re)allocated.
    bind_groups: Vec<wgpu::BindGroup>,
    /// The pad pass of the inputs, then of the targets (empty unless `padded`).
    pad_groups: Vec<wgpu::BindGroup>,
    rows: usize,
    /// With a target and the consumer weight: the projection `P = A·W` per chunk, and the sums
    /// are `BᵀB`, `Bᵀ P`, `Pᵀ P` (see [`project`]).
    projection: Option<project::Projection>,
    in_flight: Option<wgpu::SubmissionIndex>,
    half_scratch: Vec<f16>,
    timer: PassTimer,
    phases: StatsPhases,
}

impl GpuStats {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        gpu: Arc<Gpu>,
        kernels: Arc<Kernels>,
        spec: StatsSpec,
        half_inputs: bool,
        max_block_bytes: u64,
        config: TileConfig,
        forced_splits: Option<u32>,
        gather_bytes: u64,
        projected: bool,
    ) -> Result<Self> {
        let setup_start = Instant::now();
        if !config.fits(&gpu.limits) {
            return Err(Error::Gpu(format!(
                "{config} does not fit the limits of {} (workgroup memory {} bytes, {} allowed)",
                gpu.info.name,
                config.workgroup_bytes(),
                gpu.limits.max_compute_workgroup_storage_size
            )));
        }
        let unfolding = spec.unfolding;
        let d = unfolding.layout().columns();
        let d32 = to_u32(d, "columns D")?;
        let mut sums = if spec.with_target {
            vec![Sum::Gram, Sum::Cross, Sum::TargetGram]
        } else {
            vec![Sum::Gram]
        };
        let (splits, blocks) = plan_work(
            d32,
            config.tile(),
            sums.len(),
            target_workgroups(&gpu),
            forced_splits,
            max_block_bytes,
        )?;
        // The projected form when it is less work (as on the CPU: `2·D·m + m²/2` multiply-adds
        // per row against `1.5·D²`) and `G` is one block.
        let weight = spec
            .weight
            .filter(|w| spec.with_target && projected && 4 * w.outputs < 3 * d)
            .filter(|w| {
                // Each projected accumulator, and one image's projection, fits one binding.
                let (m, per_image) = (w.outputs as u64, unfolding.rows_per_image() as u64);
                let widest = splits as u64 * d as u64 * m * 8;
                let chunk = max_block_bytes.min(MAX_CHUNK_BYTES);
                m > 0 && widest <= max_block_bytes && per_image * m * 8 <= chunk
            });
        let m = weight.map_or(0, |w| w.outputs);
        if weight.is_some() {
            sums = vec![Sum::Gram, Sum::Projected, Sum::ProjectedNorm];
        }
        let m32 = to_u32(m, "consumer outputs")?;

        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let placeholder = gpu.buffer("placeholder", 16, storage)?;
        let operands = Operands::new(&gpu, &unfolding, half_inputs)?;
        let projection = weight
            .map(|w| project::Projection::new(&gpu, d, w))
            .transpose()?;
        let operand_len = operands.len;
        let padded = operands.framed || half_inputs;
        // A chunk's uploaded and padded buffers each fit one binding.
        let image_bytes = device_image_bytes(&unfolding, half_inputs, operand_len, padded);
        let chunk_limit = max_block_bytes.min(MAX_CHUNK_BYTES);
        let mut chunk_images = (chunk_limit / image_bytes) as usize;
        if let Some(p) = &projection {
            chunk_images = chunk_images.min(p.chunk_images(&gpu, &unfolding, chunk_limit, config));
        }
        if chunk_images == 0 {
            return Err(Error::Gpu(format!(
                "one input image ({image_bytes} bytes, padded) exceeds the largest buffer \
                 binding ({chunk_limit} bytes)"
            )));
        }
        let base = GramParams {
            out_rows: d32,
            out_cols: d32,
            splits,
            ..operands.base
        };

        // Cleared slice by slice as the kernels first use them (`dispatch_pending`).
        let mut slots = Vec::with_capacity(sums.len() * blocks.len());
        for &sum in &sums {
            let (rows, cols) = sum.dims(d32, m32);
            if rows == d32 && cols == d32 {
                slots.extend(blocks.iter().map(|&block| AccSlot { sum, rows, block }));
            } else {
                let block = ColumnBlock { col0: 0, cols };
                slots.push(AccSlot { sum, rows, block });
            }
        }
        let mut acc = Vec::with_capacity(slots.len());
        {
            for slot in &slots {
                let bytes = splits as u64 * slot.rows as u64 * slot.block.cols as u64 * 8;
                let buffer = gpu.buffer(
                    "gram accumulator",
                    bytes,
                    wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                )?;
                acc.push(buffer);
            }
        }
        // Slots: one per (sum, block), then the two products of `finish`, then the projection
        // and its `to_full`.
        let params = ParamSlots::new::<GramParams>(&gpu, "gram params", acc.len() + 4)?;
        let pad_params = ParamSlots::new::<PadParams>(&gpu, "pad params", 1)?;
        let pipeline = kernels.gram.tile(&gpu.device, config);
        let timer = PassTimer::new(&gpu);
        Ok(Self {
            gpu,
            kernels,
            unfolding,
            d,
            half_inputs,
            config,
            pipeline,
            splits,
            cleared_splits: 0,
            blocks,
            sums,
            slots,
            acc,
            params,
            base,
            pad_base: operands.pad,
            pad_params,
            columns: operands.columns,
            offsets: operands.offsets,
            placeholder,
            operand_len,
            padded,
            chunk_images,
            capacity_images: 0,
            pending_images: 0,
            gather_bytes,
            inputs: None,
            targets: None,
            padded_inputs: None,
            padded_targets: None,
            bind_groups: Vec::new(),
            pad_groups: Vec::new(),
            rows: 0,
            projection,
            in_flight: None,
            half_scratch: Vec::new(),
            timer,
            phases: StatsPhases {
                setup: setup_start.elapsed().as_secs_f64(),
                ..StatsPhases::default()
            },
        })
    }
}

impl StatsAccumulator for GpuStats {
    fn add_batch(&mut self, inputs: TensorView<'_>, target: Option<TensorView<'_>>) -> Result<()> {
        let n = check_stats_batch(
            &self.unfolding,
            self.sums.len() > 1,
            &inputs,
            target.as_ref(),
        )?;
        let target = target.map(|t| Source::Host(t.data));
        self.gather(n, Source::Host(inputs.data), target)
    }

    fn add_device_batch(
        &mut self,
        inputs: DeviceTensor<'_>,
        target: Option<TargetBatch<'_>>,
    ) -> Result<()> {
        let here = |t: &DeviceTensor<'_>| !self.half_inputs && Arc::ptr_eq(t.gpu(), &self.gpu);
        // What is not on this device (or is to be narrowed to f16) goes through the host.
        let host_inputs = (!here(&inputs)).then(|| inputs.read()).transpose()?;
        let host_target = match &target {
            Some(TargetBatch::Device(t)) if !here(t) => Some(t.read()?),
            _ => None,
        };
        let target = match (target, &host_target) {
            (_, Some(t)) => Some(TargetBatch::Host(t.view())),
            (t, None) => t,
        };
        if let Some(host) = &host_inputs {
            if let Some(TargetBatch::Device(t)) = target {
                let t = t.read()?;
                return self.add_batch(host.view(), Some(t.view()));
            }
            let target = target.map(|t| match t {
                TargetBatch::Host(t) => t,
                TargetBatch::Device(_) => unreachable!("read back above"),
            });
            return self.add_batch(host.view(), target);
        }
        let with_target = self.sums.len() > 1;
        let (n, target) = match target {
            Some(TargetBatch::Device(t)) => {
                if t.shape() != inputs.shape() {
                    return Err(Error::Shape(format!(
                        "target has shape {:?}, inputs have {:?}; they must match",
                        t.shape(),
                        inputs.shape()
                    )));
                }
                if !with_target {
                    return Err(Error::InvalidArgument(
                        "a target batch was given to statistics set up without a target".into(),
                    ));
                }
                let n = self.unfolding.check_shape(inputs.shape(), "inputs")?;
                (n, Some(Source::Device(t.buffer(), t.offset())))
            }
            Some(TargetBatch::Host(t)) => {
                let n = check_stats_shapes(&self.unfolding, with_target, inputs.shape(), Some(&t))?;
                (n, Some(Source::Host(t.data)))
            }
            None => {
                let n = check_stats_shapes(&self.unfolding, with_target, inputs.shape(), None)?;
                (n, None)
            }
        };
        self.gather(n, Source::Device(inputs.buffer(), inputs.offset()), target)
    }

    fn finish(mut self: Box<Self>) -> Result<RawGrams> {
        self.dispatch_pending()?;
        if self.rows == 0 {
            return Ok(self.empty());
        }
        let gpu = Arc::clone(&self.gpu);
        if self.projection.is_some() {
            return gpu.scoped("finishing the statistics", || self.finish_projected());
        }
        gpu.scoped("reading back the statistics", || self.finish_blocks())
    }

    fn finish_with_weight(mut self: Box<Self>, weight: &[f64], outputs: usize) -> Result<RawGrams> {
        if let Some(p) = &self.projection {
            if outputs != p.outputs || weight.len() != self.d * outputs {
                return Err(Error::InvalidArgument(format!(
                    "the statistics were projected on a {}×{} consumer weight; \
                     finish was given {}×{outputs}",
                    self.d,
                    p.outputs,
                    weight.len() / outputs.max(1)
                )));
            }
            return self.finish();
        }
        self.dispatch_pending()?;
        if self.rows == 0 {
            return Ok(self.empty());
        }
        if weight.len() != self.d * outputs {
            return Err(Error::Shape(format!(
                "consumer weight has {} values, expected D × m = {} × {outputs}",
                weight.len(),
                self.d
            )));
        }
        let gpu = Arc::clone(&self.gpu);
        let full_bytes = (self.d * self.d * 4) as u64;
        let on_device = self.blocks.len() == 1
            && full_bytes + (self.d as u64 + 1) * 4 <= gpu.max_binding()
            && (self.d * outputs * 8) as u64 <= gpu.max_binding()
            && outputs > 0;
        if on_device {
            gpu.scoped("finishing the statistics", || {
                self.finish_on_device(weight, outputs)
            })
        } else {
            gpu.scoped("reading back the statistics", || self.finish_blocks())
        }
    }
}
