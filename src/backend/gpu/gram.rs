//! Gram statistics on the GPU (`shaders/gram.wgsl`): `BᵀB`, and `BᵀA`, `AᵀA` for a separate
//! target, accumulated batch by batch with the unfolding done in the shader.
//!
//! Per batch the host uploads the raw consumer inputs (f32, or f16 packed two per u32), in chunks
//! of whole images that fit one binding, and dispatches one tiled kernel per sum and column block;
//! nothing is read back until [`StatsAccumulator::finish`].
//!
//! Precision: each thread sums at most `FOLD_ROWS` = 4096 unfolded rows in f32 registers (the
//! CPU backend sums 8192 rows in f32 before flushing to f64), then folds them into a compensated
//! (hi, lo) f32 pair with an error-free TwoSum. The pair carries about 48 significant bits, so the
//! error does not grow with the number of batches and no periodic readback is needed; at the end
//! the row splits are added (compensated) and `hi + lo` is read back into f64.
//!
//! Work split: the D × D result is cut into TILE × TILE tiles (only upper tiles for a symmetric
//! sum) and the batch's rows into up to `MAX_SPLITS` row splits with separate accumulator slices,
//! so that a small D still yields enough workgroups. A result larger than the device's largest
//! binding (or [`GpuBackend::with_max_block_bytes`](super::GpuBackend::with_max_block_bytes)) is
//! cut into column blocks, each its own buffer and dispatch.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{bind_group_layout, binding, pipelines, Gpu, ParamSlots, PooledBuffer, Slot};
use crate::backend::{check_stats_batch, StatsAccumulator, StatsSpec};
use crate::error::{Error, Result};
use crate::stats::{Consumer, RawGrams, Unfolding};
use crate::tensor::TensorView;

/// Output tile edge of `gram_tile` (must match `TILE` in gram.wgsl).
const TILE: u32 = 128;
/// Rows per staged step (must match `KSTEP` in gram.wgsl).
const KSTEP: u32 = 8;
/// Threads per workgroup of `fold_splits`.
const FOLD_THREADS: u32 = 256;
/// Enough workgroups per sum to fill a large GPU; row splits are added until a dispatch has this
/// many (up to `MAX_SPLITS`).
const TARGET_WORKGROUPS: u32 = 512;
/// Most row splits (accumulator slices) per sum.
const MAX_SPLITS: u32 = 16;
/// Most bytes spent on extra accumulator slices for row splits, over all sums.
const SPLIT_MEMORY_BUDGET: u64 = 256 << 20;
/// Largest input chunk uploaded at once, in bytes.
const MAX_CHUNK_BYTES: u64 = 256 << 20;

/// The compiled `gram.wgsl` kernels.
pub(super) struct GramKernels {
    layout: wgpu::BindGroupLayout,
    tile: wgpu::ComputePipeline,
    fold: wgpu::ComputePipeline,
}

impl GramKernels {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = bind_group_layout(
            device,
            "gram",
            &[Slot::Params, Slot::Read, Slot::Read, Slot::ReadWrite],
        );
        let [tile, fold] = pipelines(
            device,
            "gram.wgsl",
            include_str!("../../../shaders/gram.wgsl"),
            &layout,
            ["gram_tile", "fold_splits"],
        );
        Self { layout, tile, fold }
    }
}

/// `GramParams` of gram.wgsl (field for field).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct GramParams {
    rows: u32,
    d: u32,
    col0: u32,
    block_cols: u32,
    splits: u32,
    rows_per_split: u32,
    symmetric: u32,
    half_inputs: u32,
    conv: u32,
    channels: u32,
    height: u32,
    width: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Which sum: the left and right operands of `Lᵀ R`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sum {
    /// `BᵀB`.
    Gram,
    /// `BᵀA`.
    Cross,
    /// `AᵀA`.
    TargetGram,
}

impl Sum {
    fn symmetric(self) -> bool {
        self != Sum::Cross
    }
}

/// Output columns `col0 .. col0 + cols` of every sum, in one buffer per sum.
#[derive(Clone, Copy, Debug)]
struct ColumnBlock {
    col0: u32,
    cols: u32,
}

pub(super) struct GpuStats {
    gpu: Arc<Gpu>,
    unfolding: Unfolding,
    d: usize,
    half_inputs: bool,
    splits: u32,
    blocks: Vec<ColumnBlock>,
    sums: Vec<Sum>,
    /// `acc[s · blocks + b]`: sum `s`, column block `b`: `splits × D × cols` (hi, lo) pairs.
    acc: Vec<PooledBuffer>,
    /// One parameter slot per (sum, block), same indexing as `acc`.
    params: ParamSlots,
    base: GramParams,
    /// Images per uploaded chunk.
    chunk_images: usize,
    inputs: Option<PooledBuffer>,
    targets: Option<PooledBuffer>,
    /// Bytes bound of `inputs` / `targets`.
    input_bytes: u64,
    /// Same indexing as `acc`; built when the input buffers are (re)allocated.
    bind_groups: Vec<wgpu::BindGroup>,
    rows: usize,
    in_flight: Option<wgpu::SubmissionIndex>,
    half_scratch: Vec<f16>,
}

fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::Gpu(format!(
            "{what} = {v} exceeds the GPU kernels' u32 indexing"
        ))
    })
}

impl GpuStats {
    pub(super) fn new(
        gpu: Arc<Gpu>,
        spec: StatsSpec,
        half_inputs: bool,
        max_block_bytes: u64,
    ) -> Result<Self> {
        let unfolding = spec.unfolding;
        let d = unfolding.layout().columns();
        let d32 = to_u32(d, "columns D")?;
        let sums = if spec.with_target {
            vec![Sum::Gram, Sum::Cross, Sum::TargetGram]
        } else {
            vec![Sum::Gram]
        };

        // Row splits: enough workgroups for a big GPU, within the memory budget and one binding.
        let tiles_1d = d32.div_ceil(TILE);
        let mut splits = TARGET_WORKGROUPS
            .div_ceil(tiles_1d * (tiles_1d + 1) / 2)
            .clamp(1, MAX_SPLITS);
        let slice_bytes = d as u64 * d as u64 * 8;
        while splits > 1 && splits as u64 * slice_bytes * sums.len() as u64 > SPLIT_MEMORY_BUDGET {
            splits -= 1;
        }
        let column_bytes = d as u64 * 8; // one column of one slice
        let want_cols = (d as u64).min(TILE as u64);
        while splits > 1 && splits as u64 * column_bytes * want_cols > max_block_bytes {
            splits -= 1;
        }
        let max_cols = max_block_bytes / (splits as u64 * column_bytes);
        if max_cols == 0 {
            return Err(Error::Gpu(format!(
                "one column of the {d} × {d} statistics ({column_bytes} bytes) exceeds the largest \
                 buffer binding ({max_block_bytes} bytes)"
            )));
        }
        let mut block_cols = max_cols.min(d as u64) as u32;
        if block_cols >= TILE && block_cols < d32 {
            block_cols -= block_cols % TILE;
        }
        let blocks: Vec<ColumnBlock> = (0..d32)
            .step_by(block_cols as usize)
            .map(|col0| ColumnBlock {
                col0,
                cols: block_cols.min(d32 - col0),
            })
            .collect();

        let value_bytes: u64 = if half_inputs { 2 } else { 4 };
        let image_bytes = unfolding.image_len() as u64 * value_bytes;
        let chunk_limit = max_block_bytes.min(MAX_CHUNK_BYTES);
        let chunk_images = (chunk_limit / image_bytes) as usize;
        if chunk_images == 0 {
            return Err(Error::Gpu(format!(
                "one input image ({image_bytes} bytes) exceeds the largest buffer binding \
                 ({chunk_limit} bytes)"
            )));
        }
        to_u32(
            chunk_images * unfolding.rows_per_image(),
            "unfolded rows per chunk",
        )?;

        let (conv, kernel, stride, padding, dilation) = match unfolding.consumer {
            Consumer::Conv(g) => (1, g.kernel, g.stride, g.padding, g.dilation),
            Consumer::Linear | Consumer::FlattenLinear => (0, [1, 1], [1, 1], [0, 0], [1, 1]),
        };
        let c32 = |v: usize| v as u32; // geometry is bounded by D and the image size
        let base = GramParams {
            d: d32,
            splits,
            half_inputs: half_inputs as u32,
            conv,
            channels: c32(unfolding.channels),
            height: c32(unfolding.height),
            width: c32(unfolding.width),
            out_h: c32(unfolding.out_size[0]),
            out_w: c32(unfolding.out_size[1]),
            kernel_h: c32(kernel[0]),
            kernel_w: c32(kernel[1]),
            stride_h: c32(stride[0]),
            stride_w: c32(stride[1]),
            pad_h: c32(padding[0]),
            pad_w: c32(padding[1]),
            dil_h: c32(dilation[0]),
            dil_w: c32(dilation[1]),
            ..Default::default()
        };

        let mut acc = Vec::with_capacity(sums.len() * blocks.len());
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gram clear"),
            });
        for _ in &sums {
            for block in &blocks {
                let bytes = splits as u64 * d as u64 * block.cols as u64 * 8;
                let buffer = gpu.buffer(
                    "gram accumulator",
                    bytes,
                    wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                )?;
                encoder.clear_buffer(&buffer, 0, None);
                acc.push(buffer);
            }
        }
        gpu.queue.submit([encoder.finish()]);
        let params = ParamSlots::new::<GramParams>(&gpu, "gram params", acc.len())?;
        let stats = Self {
            gpu,
            unfolding,
            d,
            half_inputs,
            splits,
            blocks,
            sums,
            acc,
            params,
            base,
            chunk_images,
            inputs: None,
            targets: None,
            input_bytes: 0,
            bind_groups: Vec::new(),
            rows: 0,
            in_flight: None,
            half_scratch: Vec::new(),
        };
        stats.write_params(0);
        Ok(stats)
    }

    /// Parameters of every (sum, block) dispatch for a chunk of `rows` unfolded rows.
    fn write_params(&self, rows: u32) {
        let rows_per_split = rows
            .div_ceil(self.splits)
            .next_multiple_of(KSTEP)
            .max(KSTEP);
        let slots: Vec<GramParams> = self
            .sums
            .iter()
            .flat_map(|sum| {
                self.blocks.iter().map(move |block| GramParams {
                    rows,
                    rows_per_split,
                    col0: block.col0,
                    block_cols: block.cols,
                    symmetric: sum.symmetric() as u32,
                    ..self.base
                })
            })
            .collect();
        self.params.write(&self.gpu.queue, &slots);
    }

    /// Makes the input buffers hold `bytes` and rebuilds the bind groups if they changed.
    fn reserve_inputs(&mut self, bytes: u64) -> Result<()> {
        let bytes = bytes.next_multiple_of(4);
        if self.inputs.is_some() && self.input_bytes >= bytes {
            return Ok(());
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        self.inputs = Some(self.gpu.buffer("statistics inputs", bytes, usage)?);
        if self.sums.len() > 1 {
            self.targets = Some(self.gpu.buffer("statistics targets", bytes, usage)?);
        }
        self.input_bytes = bytes;
        let inputs = self.inputs.as_deref().expect("just allocated");
        let targets = self.targets.as_deref().unwrap_or(inputs);
        let mut groups = Vec::with_capacity(self.acc.len());
        for (s, sum) in self.sums.iter().enumerate() {
            let (left, right) = match sum {
                Sum::Gram => (inputs, inputs),
                Sum::Cross => (inputs, targets),
                Sum::TargetGram => (targets, targets),
            };
            for (b, block) in self.blocks.iter().enumerate() {
                let acc = &self.acc[s * self.blocks.len() + b];
                let acc_bytes = self.splits as u64 * self.d as u64 * block.cols as u64 * 8;
                groups.push(
                    self.gpu
                        .device
                        .create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("gram"),
                            layout: &self.gpu.gram.layout,
                            entries: &[
                                wgpu::BindGroupEntry {
                                    binding: 0,
                                    resource: self.params.binding(),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 1,
                                    resource: binding(left, bytes),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 2,
                                    resource: binding(right, bytes),
                                },
                                wgpu::BindGroupEntry {
                                    binding: 3,
                                    resource: binding(acc, acc_bytes),
                                },
                            ],
                        }),
                );
            }
        }
        self.bind_groups = groups;
        Ok(())
    }

    /// Uploads `values` (flat indices from `first_index` in the caller's batch) into `buffer`.
    fn upload(
        queue: &wgpu::Queue,
        buffer: &wgpu::Buffer,
        values: &[f32],
        half: Option<&mut Vec<f16>>,
        name: &str,
        first_index: usize,
    ) -> Result<()> {
        match half {
            None => queue.write_buffer(buffer, 0, bytemuck::cast_slice(values)),
            Some(scratch) => {
                scratch.clear();
                scratch.resize(values.len().next_multiple_of(2), f16::ZERO);
                scratch[..values.len()].convert_from_f32_slice(values);
                if let Some(i) = scratch[..values.len()].iter().position(|h| !h.is_finite()) {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: value {} at flat index {} is outside the f16 range (±65504); \
                         turn f16 inputs off for this layer",
                        values[i],
                        first_index + i
                    )));
                }
                queue.write_buffer(buffer, 0, bytemuck::cast_slice(scratch.as_slice()));
            }
        }
        Ok(())
    }

    fn check_batch(
        &self,
        inputs: &TensorView<'_>,
        target: &Option<TensorView<'_>>,
    ) -> Result<usize> {
        let n = check_stats_batch(
            &self.unfolding,
            self.sums.len() > 1,
            inputs,
            target.as_ref(),
        )?;
        Ok(n)
    }

    fn add_chunk(
        &mut self,
        inputs: &[f32],
        target: Option<&[f32]>,
        images: usize,
        first_index: usize,
    ) -> Result<()> {
        let gpu = Arc::clone(&self.gpu);
        let inputs_buffer = self.inputs.as_deref().expect("reserved");
        let mut half = self.half_inputs.then_some(&mut self.half_scratch);
        Self::upload(
            &gpu.queue,
            inputs_buffer,
            inputs,
            half.as_deref_mut(),
            "inputs",
            first_index,
        )?;
        if let (Some(t), Some(buffer)) = (target, self.targets.as_deref()) {
            Self::upload(&gpu.queue, buffer, t, half, "target", first_index)?;
        }
        let rows = images * self.unfolding.rows_per_image();
        self.write_params(rows as u32);
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gram"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gram"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&gpu.gram.tile);
            let d = self.d as u32;
            for (s, sum) in self.sums.iter().enumerate() {
                for (b, block) in self.blocks.iter().enumerate() {
                    let slot = s * self.blocks.len() + b;
                    let row_end = if sum.symmetric() {
                        d.min(block.col0 + block.cols)
                    } else {
                        d
                    };
                    pass.set_bind_group(0, &self.bind_groups[slot], &[self.params.offset(slot)]);
                    pass.dispatch_workgroups(
                        block.cols.div_ceil(TILE),
                        row_end.div_ceil(TILE),
                        self.splits,
                    );
                }
            }
        }
        let index = gpu.queue.submit([encoder.finish()]);
        // At most two chunks in flight: the host prepares one while the GPU works on another.
        if let Some(previous) = self.in_flight.replace(index) {
            gpu.wait_for(previous, "accumulating statistics")?;
        }
        self.rows += rows;
        Ok(())
    }
}

impl StatsAccumulator for GpuStats {
    fn add_batch(&mut self, inputs: TensorView<'_>, target: Option<TensorView<'_>>) -> Result<()> {
        let n = self.check_batch(&inputs, &target)?;
        if n == 0 {
            return Ok(());
        }
        let gpu = Arc::clone(&self.gpu);
        gpu.scoped("accumulating statistics", || {
            let image_len = self.unfolding.image_len();
            let value_bytes = if self.half_inputs { 2 } else { 4 };
            let per_chunk = self.chunk_images.min(n);
            self.reserve_inputs((per_chunk * image_len * value_bytes) as u64)?;
            let mut first = 0;
            while first < n {
                let count = self.chunk_images.min(n - first);
                let range = first * image_len..(first + count) * image_len;
                self.add_chunk(
                    &inputs.data[range.clone()],
                    target.map(|t| &t.data[range.clone()]),
                    count,
                    range.start,
                )?;
                first += count;
            }
            Ok(())
        })
    }

    fn finish(self: Box<Self>) -> Result<RawGrams> {
        let d = self.d;
        let mut totals: Vec<Vec<f64>> = self.sums.iter().map(|_| vec![0.0; d * d]).collect();
        if self.rows > 0 {
            let gpu = Arc::clone(&self.gpu);
            gpu.scoped("reading back the statistics", || {
                let widest = self.blocks.iter().map(|b| b.cols).max().unwrap_or(1) as u64;
                let staging = gpu.buffer(
                    "statistics readback",
                    d as u64 * widest * 8,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                )?;
                for (s, total) in totals.iter_mut().enumerate() {
                    for (b, block) in self.blocks.iter().enumerate() {
                        let slot = s * self.blocks.len() + b;
                        let cols = block.cols as usize;
                        let bytes = (d * cols * 8) as u64;
                        let mut encoder =
                            gpu.device
                                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                    label: Some("gram readback"),
                                });
                        if self.splits > 1 {
                            let mut pass =
                                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                                    label: Some("fold splits"),
                                    timestamp_writes: None,
                                });
                            pass.set_pipeline(&gpu.gram.fold);
                            pass.set_bind_group(
                                0,
                                &self.bind_groups[slot],
                                &[self.params.offset(slot)],
                            );
                            let (x, y) = gpu.grid(((d * cols) as u32).div_ceil(FOLD_THREADS));
                            pass.dispatch_workgroups(x, y, 1);
                        }
                        encoder.copy_buffer_to_buffer(&self.acc[slot], 0, &staging, 0, bytes);
                        let words = gpu.submit_and_read(
                            encoder,
                            &staging,
                            bytes,
                            "reading back the statistics",
                        )?;
                        let col0 = block.col0 as usize;
                        for (r, row) in words.chunks_exact(2 * cols).enumerate() {
                            let dst = &mut total[r * d + col0..r * d + col0 + cols];
                            for (t, pair) in dst.iter_mut().zip(row.chunks_exact(2)) {
                                *t =
                                    f32::from_bits(pair[0]) as f64 + f32::from_bits(pair[1]) as f64;
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
        for (sum, total) in self.sums.iter().zip(totals.iter_mut()) {
            if sum.symmetric() {
                for i in 0..d {
                    for j in 0..i {
                        total[i * d + j] = total[j * d + i];
                    }
                }
            }
        }
        let mut totals = totals.into_iter();
        let gram = totals.next().expect("the Gram sum");
        Ok(RawGrams {
            gram,
            cross: totals.next(),
            target_gram: totals.next(),
            rows: self.rows,
        })
    }
}
