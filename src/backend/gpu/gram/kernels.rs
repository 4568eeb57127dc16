//! The compiled statistics kernels and their dispatch: per chunk of uploaded images, the pad
//! pass (when the operands need framing or widening) and the tile kernel once per sum and column
//! block, all in one compute pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::config::TileConfig;
use super::work::to_u32;
use super::GpuStats;
use crate::error::{Error, Result};
use crate::gpu::{
    bind_group, bind_group_layout, binding, shader_module, shaders, tiled_pipeline, PadKernel,
    PadParams, Phase, Slot,
};

/// The compiled `gram.wgsl` kernels: `gram_tile` per tile configuration (compiled on first use),
/// `fold_splits`, `to_full` and `row_dots`; and the pad pass that writes their operands.
pub(crate) struct GramKernels {
    pub(super) layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    tiles: Mutex<HashMap<TileConfig, wgpu::ComputePipeline>>,
    pub(super) fold: wgpu::ComputePipeline,
    pub(super) to_full: wgpu::ComputePipeline,
    pub(super) row_dots: wgpu::ComputePipeline,
    pub(super) pad: PadKernel,
}

impl GramKernels {
    /// Compiles the kernels, with wgpu's runtime bounds checks unless `checked` is false.
    pub(crate) fn new(device: &wgpu::Device, checked: bool) -> Self {
        let layout = bind_group_layout(
            device,
            "gram",
            &[
                Slot::Params,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
            ],
        );
        let module = shader_module(device, "gram.wgsl", shaders::GRAM, checked);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("gram.wgsl"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let small = TileConfig { wg: 8, bk: 8 };
        let fold = compute_pipeline(device, &pipeline_layout, &module, "fold_splits", small);
        let to_full = compute_pipeline(device, &pipeline_layout, &module, "to_full", small);
        let row_dots = compute_pipeline(device, &pipeline_layout, &module, "row_dots", small);
        let pad = PadKernel::new(device, checked);
        Self {
            layout,
            pipeline_layout,
            module,
            tiles: Mutex::new(HashMap::new()),
            fold,
            to_full,
            row_dots,
            pad,
        }
    }

    /// `gram_tile` specialised for `config` (compiled once per configuration).
    pub(super) fn tile(&self, device: &wgpu::Device, config: TileConfig) -> wgpu::ComputePipeline {
        let mut tiles = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        tiles
            .entry(config)
            .or_insert_with(|| {
                compute_pipeline(
                    device,
                    &self.pipeline_layout,
                    &self.module,
                    "gram_tile",
                    config,
                )
            })
            .clone()
    }
}

fn compute_pipeline(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    module: &wgpu::ShaderModule,
    entry: &str,
    config: TileConfig,
) -> wgpu::ComputePipeline {
    tiled_pipeline(
        device,
        layout,
        module,
        entry,
        [config.wg, config.wg, config.bk],
    )
}

impl GpuStats {
    /// A bind group of the gram kernels: operands `left` and `right`, accumulator `acc`, the
    /// conv tables, and `full` (a placeholder when `None`).
    pub(super) fn bind_group(
        &self,
        left: &wgpu::Buffer,
        right: &wgpu::Buffer,
        operand_bytes: (u64, u64),
        acc: &wgpu::Buffer,
        acc_bytes: u64,
        full: Option<(&wgpu::Buffer, u64)>,
    ) -> wgpu::BindGroup {
        let (full, full_bytes) = full.unwrap_or((&self.placeholder, 16));
        let resources = [
            self.params.binding(),
            binding(left, operand_bytes.0),
            binding(right, operand_bytes.1),
            binding(acc, acc_bytes),
            binding(&self.columns, self.columns.size()),
            binding(&self.offsets, self.offsets.size()),
            binding(full, full_bytes),
        ];
        bind_group(
            &self.gpu.device,
            Some("gram"),
            &self.kernels.gram.layout,
            resources,
        )
    }

    /// Runs the kernels over the pending images.
    pub(super) fn dispatch_pending(&mut self) -> Result<()> {
        let images = std::mem::take(&mut self.pending_images);
        if images == 0 {
            return Ok(());
        }
        let gpu = Arc::clone(&self.gpu);
        let rows = images
            .checked_mul(self.unfolding.rows_per_image())
            .ok_or_else(|| Error::Gpu("unfolded rows per chunk overflow usize".into()))?;
        let rows32 = to_u32(rows, "unfolded rows per chunk")?;
        let start = Instant::now();
        let mut params = self.slot_params(rows32);
        let projection_slot = params.len() + 2;
        if self.projection.is_some() {
            // After the two slots of `finish`'s products (unused by the projected form).
            let [project, to_full] = self.projection_params(rows32);
            params.extend([project, project, project, to_full]);
        }
        let pad_count = to_u32(images * self.operand_len, "padded values per chunk")?;
        self.params.write(&gpu.queue, &params);
        let pad = PadParams {
            count: pad_count,
            ..self.pad_base
        };
        self.pad_params.write(&gpu.queue, &[pad]);
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gram"),
            });
        // Row splits of this chunk (the same for every sum and block): the slices it writes
        // for the first time are cleared first, so that a layer whose chunks use fewer splits
        // than planned neither clears nor folds the others.
        let splits = params[0].rows.div_ceil(params[0].rows_per_split);
        if splits > self.cleared_splits {
            for (slot, acc) in self.slots.iter().zip(&self.acc) {
                let slice = slot.rows as u64 * slot.block.cols as u64 * 8;
                let first = self.cleared_splits as u64 * slice;
                let bytes = (splits - self.cleared_splits) as u64 * slice;
                encoder.clear_buffer(acc, first, Some(bytes));
            }
            self.cleared_splits = splits;
            self.phases.row_splits = splits;
        }
        self.clear_projection(&mut encoder, rows);
        {
            // One pass: each dispatch is its own usage scope, so the tile kernels see what
            // the pad pass wrote.
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gram"),
                timestamp_writes: self.timer.writes(Phase::Kernel),
            });
            if !self.pad_groups.is_empty() {
                pass.set_pipeline(&self.kernels.gram.pad.pipeline);
                let (x, y) = PadKernel::grid(&gpu, pad_count);
                for group in &self.pad_groups {
                    pass.set_bind_group(0, group, &[self.pad_params.offset(0)]);
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
            // The projection first: the projected sums read its P.
            self.encode_projection(&mut pass, rows32, projection_slot);
            pass.set_pipeline(&self.pipeline);
            let tile = self.config.tile();
            for (i, slot) in self.slots.iter().enumerate() {
                let block = slot.block;
                let row_end = if slot.sum.symmetric() {
                    slot.rows.min(block.col0 + block.cols)
                } else {
                    slot.rows
                };
                pass.set_bind_group(0, &self.bind_groups[i], &[self.params.offset(i)]);
                pass.dispatch_workgroups(block.cols.div_ceil(tile), row_end.div_ceil(tile), splits);
            }
        }
        let index = gpu.queue.submit([encoder.finish()]);
        // At most two chunks in flight: the host prepares one while the GPU works on another.
        if let Some(previous) = self.in_flight.replace(index) {
            gpu.wait_for(previous, "accumulating statistics")?;
        }
        self.phases.kernel += start.elapsed().as_secs_f64();
        self.phases.multiply_adds += rows as u64 * self.row_work();
        self.rows += rows;
        Ok(())
    }
}
