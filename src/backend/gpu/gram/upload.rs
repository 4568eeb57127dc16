//! The inputs of the statistics kernels: the operand layout (conv tables, pad geometry), the
//! device buffers that hold a gathered chunk of images, and the upload (or device copy) of each
//! batch into them.

use std::sync::Arc;
use std::time::Instant;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::config::GramParams;
use super::work::{device_image_bytes, to_u32, too_large, upload_bytes};
use super::{GpuStats, Source, Sum};
use crate::error::{Error, Result};
use crate::gpu::{bind_group, binding, Gpu, PadFrame, PadParams, PooledBuffer};
use crate::layer::{Consumer, Unfolding};

/// The operands the tile kernel reads, as the unfolding lays them out: the conv tables (or
/// 16-byte placeholders for a dense consumer), the parameters they imply, and how the pad pass
/// frames an uploaded image into one operand image.
pub(super) struct Operands {
    pub(super) columns: PooledBuffer,
    pub(super) offsets: PooledBuffer,
    pub(super) base: GramParams,
    pub(super) pad: PadParams,
    /// Values per operand image (padded planes for a conv).
    pub(super) len: usize,
    /// Whether the conv pads (the uploaded planes must be framed).
    pub(super) framed: bool,
}

impl Operands {
    pub(super) fn new(gpu: &Arc<Gpu>, unfolding: &Unfolding, half_inputs: bool) -> Result<Self> {
        let d = unfolding.layout().columns();
        let d32 = to_u32(d, "columns D")?;
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        // The tables address the padded planes; the pad parameters carry both geometries.
        let raw_len = to_u32(unfolding.image_len(), "values per image")?;
        let (columns, offsets, base, frame) = match unfolding.consumer {
            Consumer::Conv(g) => {
                let [kh, kw] = g.kernel;
                let [pad_h, pad_w] = g.padding;
                let frame = PadFrame {
                    channels: unfolding.channels,
                    height: unfolding.height,
                    width: unfolding.width,
                    padded_height: unfolding.height + 2 * pad_h,
                    padded_width: unfolding.width + 2 * pad_w,
                    top: pad_h,
                    left: pad_w,
                };
                let wp = frame.padded_width;
                let plane = frame.padded_height * wp;
                let mut cols = Vec::with_capacity(d);
                for c in 0..unfolding.channels {
                    for i in 0..kh {
                        for j in 0..kw {
                            let at = c * plane + i * g.dilation[0] * wp + j * g.dilation[1];
                            cols.push(to_u32(at, "padded column offset")?);
                        }
                    }
                }
                let [oh, ow] = unfolding.out_size;
                let mut offs = Vec::with_capacity(oh * ow);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = oy * g.stride[0] * wp + ox * g.stride[1];
                        offs.push(to_u32(at, "padded position offset")?);
                    }
                }
                let columns = gpu.buffer("conv column table", cols.len() as u64 * 4, storage)?;
                gpu.queue
                    .write_buffer(&columns, 0, bytemuck::cast_slice(&cols));
                let offsets = gpu.buffer("conv position table", offs.len() as u64 * 4, storage)?;
                gpu.queue
                    .write_buffer(&offsets, 0, bytemuck::cast_slice(&offs));
                let base = GramParams {
                    conv: 1,
                    image_len: to_u32(frame.padded_len(), "values per padded image")?,
                    positions: to_u32(oh * ow, "output positions")?,
                    ..Default::default()
                };
                (columns, offsets, base, frame)
            }
            Consumer::Linear | Consumer::FlattenLinear => {
                // Identity tables (one position, column k at k): what the projection of a dense
                // target reads (`conv = 2` in gram.wgsl); the dense sums read no table.
                let identity: Vec<u32> = (0..d32).collect();
                let columns = gpu.buffer("dense column table", d as u64 * 4 + 4, storage)?;
                gpu.queue
                    .write_buffer(&columns, 0, bytemuck::cast_slice(&identity));
                let offsets = gpu.buffer("dense position table", 16, storage)?;
                gpu.queue
                    .write_buffer(&offsets, 0, bytemuck::cast_slice(&[0u32; 4]));
                let base = GramParams {
                    left_stride: d32,
                    right_stride: d32,
                    image_len: raw_len,
                    ..Default::default()
                };
                // For the pad pass (f16 widening only), an image is one plane of one row.
                let len = unfolding.image_len();
                let frame = PadFrame {
                    channels: 1,
                    height: 1,
                    width: len,
                    padded_height: 1,
                    padded_width: len,
                    top: 0,
                    left: 0,
                };
                (columns, offsets, base, frame)
            }
        };
        let pad = frame
            .params(0, half_inputs)
            .map_err(|(what, v)| too_large(what, v))?;
        Ok(Self {
            columns,
            offsets,
            base,
            pad,
            len: frame.padded_len(),
            framed: frame.top > 0 || frame.left > 0,
        })
    }
}

impl GpuStats {
    /// Makes the input buffers hold `images` images (the uploaded ones, and the padded operands
    /// when `padded`) and rebuilds the bind groups.
    fn reserve_inputs(&mut self, images: usize) -> Result<()> {
        let raw_bytes =
            (images * upload_bytes(&self.unfolding, self.half_inputs)).next_multiple_of(4) as u64;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let with_target = self.sums.len() > 1;
        self.inputs = Some(self.gpu.buffer("statistics inputs", raw_bytes, usage)?);
        if with_target {
            self.targets = Some(self.gpu.buffer("statistics targets", raw_bytes, usage)?);
        }
        let operand_bytes = if self.padded {
            let bytes = images as u64 * self.operand_len as u64 * 4;
            let storage = wgpu::BufferUsages::STORAGE;
            self.padded_inputs = Some(self.gpu.buffer("padded inputs", bytes, storage)?);
            if with_target {
                self.padded_targets = Some(self.gpu.buffer("padded targets", bytes, storage)?);
            }
            bytes
        } else {
            raw_bytes
        };
        self.reserve_projection(images)?;
        let raw_inputs = self.inputs.as_deref().expect("just allocated");
        let raw_targets = self.targets.as_deref().unwrap_or(raw_inputs);
        let inputs = self.padded_inputs.as_deref().unwrap_or(raw_inputs);
        let targets = self.padded_targets.as_deref().unwrap_or(raw_targets);
        let projected = self.projected_values();
        let mut groups = Vec::with_capacity(self.acc.len());
        for (slot, acc) in self.slots.iter().zip(&self.acc) {
            let operand = (inputs, operand_bytes);
            let target = (targets, operand_bytes);
            let ((left, left_bytes), (right, right_bytes)) = match slot.sum {
                Sum::Gram => (operand, operand),
                Sum::Cross => (target, operand),
                Sum::TargetGram => (target, target),
                Sum::Projected => (operand, projected.expect("projected form")),
                Sum::ProjectedNorm => {
                    let p = projected.expect("projected form");
                    (p, p)
                }
            };
            let acc_bytes = self.splits as u64 * slot.rows as u64 * slot.block.cols as u64 * 8;
            let operands = (left_bytes, right_bytes);
            groups.push(self.bind_group(left, right, operands, acc, acc_bytes, None));
        }
        let projection_groups = self.projection_groups(targets, operand_bytes);
        let mut pad_groups = Vec::new();
        if self.padded {
            let mut pairs = vec![(raw_inputs, inputs)];
            if with_target {
                pairs.push((raw_targets, targets));
            }
            for (raw, padded) in pairs {
                pad_groups.push(bind_group(
                    &self.gpu.device,
                    Some("pad"),
                    &self.kernels.gram.pad.layout,
                    [
                        self.pad_params.binding(),
                        binding(raw, raw_bytes),
                        binding(padded, operand_bytes),
                    ],
                ));
            }
        }
        self.bind_groups = groups;
        self.pad_groups = pad_groups;
        self.set_projection_groups(projection_groups);
        Ok(())
    }

    /// Uploads `values` (flat indices from `first_index` in the caller's batch) into `buffer`
    /// at byte `offset` (a multiple of 4).
    fn upload(
        queue: &wgpu::Queue,
        buffer: &wgpu::Buffer,
        offset: u64,
        values: &[f32],
        half: Option<&mut Vec<f16>>,
        name: &str,
        first_index: usize,
    ) -> Result<()> {
        match half {
            None => queue.write_buffer(buffer, offset, bytemuck::cast_slice(values)),
            Some(scratch) => {
                scratch.clear();
                scratch.resize(values.len().next_multiple_of(2), f16::ZERO);
                scratch[..values.len()].convert_from_f32_slice(values);
                if let Some(i) = scratch[..values.len()].iter().position(|h| !h.is_finite()) {
                    return Err(Error::OutsideF16 {
                        tensor: name.to_string(),
                        index: first_index + i,
                        value: values[i],
                    });
                }
                queue.write_buffer(buffer, offset, bytemuck::cast_slice(scratch.as_slice()));
            }
        }
        Ok(())
    }

    /// Puts `images` images behind the pending ones (the caller checked that they fit): inputs
    /// and targets uploaded from the host or copied on the device.
    fn upload_pending(
        &mut self,
        inputs: Source<'_>,
        target: Option<Source<'_>>,
        images: usize,
        first_index: usize,
    ) -> Result<()> {
        let gpu = Arc::clone(&self.gpu);
        let start = Instant::now();
        let len = images * self.unfolding.image_len();
        let image_bytes = upload_bytes(&self.unfolding, self.half_inputs);
        let batch_bytes = (images * image_bytes) as u64;
        let offset = (self.pending_images * image_bytes) as u64;
        debug_assert!(offset.is_multiple_of(4));
        let inputs_buffer = self.inputs.as_deref().expect("reserved");
        let mut half = self.half_inputs.then_some(&mut self.half_scratch);
        let mut parts = vec![(inputs, inputs_buffer, "inputs")];
        if let (Some(t), Some(buffer)) = (target, self.targets.as_deref()) {
            parts.push((t, buffer, "target"));
        }
        for (source, buffer, name) in parts {
            match source {
                Source::Host(values) => {
                    Self::upload(
                        &gpu.queue,
                        buffer,
                        offset,
                        values,
                        half.as_deref_mut(),
                        name,
                        first_index,
                    )?;
                    self.phases.uploaded_bytes += batch_bytes;
                }
                Source::Device(from, at) => {
                    // f32 on both sides (the caller falls back to a readback for f16 inputs);
                    // the copy is submitted now, while the executor keeps the source alive.
                    debug_assert!(!self.half_inputs);
                    let bytes = 4 * len as u64;
                    let mut encoder =
                        gpu.device
                            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                label: Some("statistics operands from a device tensor"),
                            });
                    encoder.copy_buffer_to_buffer(
                        from,
                        at + 4 * first_index as u64,
                        buffer,
                        offset,
                        bytes,
                    );
                    gpu.queue.submit([encoder.finish()]);
                    self.phases.device_bytes += bytes;
                }
            }
        }
        self.pending_images += images;
        self.phases.upload += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Gathers a checked batch of `n` images into the input buffers, summing them chunk by chunk.
    pub(super) fn gather(
        &mut self,
        n: usize,
        inputs: Source<'_>,
        target: Option<Source<'_>>,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let gpu = Arc::clone(&self.gpu);
        gpu.scoped("accumulating statistics", || {
            let image_len = self.unfolding.image_len();
            // Input buffers for up to `gather_bytes` of images (at least this batch, at most a
            // chunk; padded images counted at their padded size), filled batch after batch and
            // summed when full (or at the end). Sized from the batches seen, so the u32 checks
            // apply to what is really uploaded.
            let image_bytes = device_image_bytes(
                &self.unfolding,
                self.half_inputs,
                self.operand_len,
                self.padded,
            );
            let gather = ((self.gather_bytes / image_bytes) as usize).max(n);
            let want = self.chunk_images.min(gather);
            if want > self.capacity_images {
                self.dispatch_pending()?;
                self.reserve_inputs(want)?;
                self.capacity_images = want;
            }
            // f16 values are uploaded in whole u32 words: an odd number of values pending
            // (odd images × odd image length) cannot be appended to.
            let half = self.half_inputs;
            let odd = move |images: usize| half && (images * image_len) % 2 == 1;
            let mut first = 0;
            while first < n {
                if self.pending_images == self.capacity_images || odd(self.pending_images) {
                    self.dispatch_pending()?;
                }
                let count = (self.capacity_images - self.pending_images).min(n - first);
                let range = first * image_len..(first + count) * image_len;
                let target = target.map(|t| part(t, range.clone()));
                self.upload_pending(part(inputs, range.clone()), target, count, range.start)?;
                first += count;
            }
            Ok(())
        })
    }
}

/// The values `range` (flat indices of the batch) of a source: a host slice is cut, a device
/// source is addressed by the flat index when copied.
fn part(source: Source<'_>, range: std::ops::Range<usize>) -> Source<'_> {
    match source {
        Source::Host(values) => Source::Host(&values[range]),
        Source::Device(buffer, at) => Source::Device(buffer, at),
    }
}
