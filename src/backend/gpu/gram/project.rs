//! The projected statistics: with a target `A` and the consumer weight `W` known up front, each
//! chunk's target is projected on the device, `P = U(A)·W` (the consumer's forward without bias,
//! `rows × m`, row-ordered like the unfolded rows), and the sums are `BᵀB`, `C0 = Bᵀ P` and
//! `Pᵀ P` (whose trace is `‖AW‖²`) instead of `BᵀB`, `AᵀB` and `AᵀA`: about
//! `D²/2 + 2·D·m + m²/2` multiply-adds per unfolded row instead of `2·D²`.
//!
//! All of it runs in the tile kernel of gram.wgsl (modes 2 and 3 there), in the same compute pass
//! as the Gram sum: the projection accumulates into (hi, lo) pairs like any sum (`P` is exact to
//! f32 rounding), `to_full` writes it as f32, then the cross and norm sums read it as dense rows.
//! At the end `G` and `C0` stay on the device as f32 matrices (as in the unprojected form); only
//! `C0`'s non-finite flag and `Pᵀ P`'s diagonal come back.

use std::sync::Arc;
use std::time::Instant;

use super::config::{GramParams, TileConfig, FLAT_THREADS};
use super::finish::FullMatrix;
use super::{GpuStats, Sum};
use crate::backend::ConsumerWeight;
use crate::error::Result;
use crate::gpu::{Gpu, Phase, PooledBuffer};
use crate::layer::{RawGrams, StatsMatrix, Unfolding};

/// The projection of one layer's targets: the weight on the device, and the per-chunk buffers
/// of `P` (allocated with the input buffers).
pub(super) struct Projection {
    /// Consumer outputs `m`.
    pub(super) outputs: usize,
    /// `W` in f32, `D × m` row-major.
    weight: PooledBuffer,
    /// `P` of the current chunk as (hi, lo) pairs, `rows × m`, and as f32 (then `to_full`'s
    /// tail: `rows + 1` values), for `capacity_rows` unfolded rows.
    pairs: Option<PooledBuffer>,
    values: Option<PooledBuffer>,
    capacity_rows: usize,
    /// The bind groups of the projection (targets · W → pairs) and of its `to_full`.
    groups: Vec<wgpu::BindGroup>,
}

impl Projection {
    pub(super) fn new(gpu: &Arc<Gpu>, d: usize, w: ConsumerWeight<'_>) -> Result<Self> {
        if w.weight.len() != d * w.outputs {
            return Err(crate::error::Error::Shape(format!(
                "consumer weight has {} entries, expected {d}×{}",
                w.weight.len(),
                w.outputs
            )));
        }
        let w32: Vec<f32> = w.weight.iter().map(|&x| x as f32).collect();
        let weight = gpu.buffer(
            "consumer weight",
            (w32.len() * 4) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        gpu.queue
            .write_buffer(&weight, 0, bytemuck::cast_slice(&w32));
        Ok(Self {
            outputs: w.outputs,
            weight,
            pairs: None,
            values: None,
            capacity_rows: 0,
            groups: Vec::new(),
        })
    }

    /// Most images per chunk whose `P` fits one binding of `limit` bytes and whose projection
    /// grid fits the device's workgroup limit.
    pub(super) fn chunk_images(
        &self,
        gpu: &Gpu,
        unfolding: &Unfolding,
        limit: u64,
        config: TileConfig,
    ) -> usize {
        let rows = unfolding.rows_per_image().max(1) as u64;
        let by_bytes = limit / (rows * self.outputs as u64 * 8);
        let max_rows =
            gpu.limits.max_compute_workgroups_per_dimension as u64 * config.tile() as u64;
        by_bytes.min(max_rows / rows) as usize
    }
}

impl GpuStats {
    /// Consumer outputs `m` of the projected form (0 without it).
    pub(super) fn outputs(&self) -> u32 {
        self.projection.as_ref().map_or(0, |p| p.outputs as u32)
    }

    /// Multiply-adds per unfolded row of the kernels of one chunk: every sum (a symmetric one
    /// counted as its upper triangle) and the projection.
    pub(super) fn row_work(&self) -> u64 {
        let (d, m) = (self.d as u64, self.outputs() as u64);
        let sums: u64 = self
            .sums
            .iter()
            .map(|sum| {
                let (r, c) = sum.dims(d as u32, m as u32);
                let (r, c) = (r as u64, c as u64);
                if sum.symmetric() {
                    r * (r + 1) / 2
                } else {
                    r * c
                }
            })
            .sum();
        sums + d * m
    }

    /// Allocates `P`'s buffers for `images` images.
    pub(super) fn reserve_projection(&mut self, images: usize) -> Result<()> {
        let rows = images * self.unfolding.rows_per_image();
        let Some(p) = self.projection.as_mut() else {
            return Ok(());
        };
        let m = p.outputs;
        let storage = wgpu::BufferUsages::STORAGE;
        p.pairs = Some(self.gpu.buffer(
            "projected target (pairs)",
            (rows * m * 8) as u64,
            storage | wgpu::BufferUsages::COPY_DST,
        )?);
        // `to_full`'s tail after the matrix: a diagonal of `rows` values and a flag.
        p.values = Some(self.gpu.buffer(
            "projected target",
            ((rows * m + rows + 1) * 4) as u64,
            storage,
        )?);
        p.capacity_rows = rows;
        Ok(())
    }

    /// `P` as f32 (`rows × m` row-major, what the projected sums read) and its bytes.
    pub(super) fn projected_values(&self) -> Option<(&wgpu::Buffer, u64)> {
        let p = self.projection.as_ref()?;
        let values = p.values.as_deref().expect("reserved with the inputs");
        Some((values, values.size()))
    }

    /// The bind groups of the projection (reading `targets`, `operand_bytes` long, times W into
    /// the pairs) and of its `to_full` (pairs into f32), once `P`'s buffers are reserved.
    pub(super) fn projection_groups(
        &self,
        targets: &wgpu::Buffer,
        operand_bytes: u64,
    ) -> Vec<wgpu::BindGroup> {
        let Some(p) = &self.projection else {
            return Vec::new();
        };
        let pairs = p.pairs.as_deref().expect("reserved with the inputs");
        let values = p.values.as_deref().expect("reserved with the inputs");
        let project = self.bind_group(
            targets,
            &p.weight,
            (operand_bytes, p.weight.size()),
            pairs,
            pairs.size(),
            None,
        );
        let to_full = self.bind_group(
            &self.placeholder,
            &self.placeholder,
            (16, 16),
            pairs,
            pairs.size(),
            Some((values, values.size())),
        );
        vec![project, to_full]
    }

    /// Sets the projection's bind groups (built by [`Self::projection_groups`]).
    pub(super) fn set_projection_groups(&mut self, groups: Vec<wgpu::BindGroup>) {
        if let Some(p) = self.projection.as_mut() {
            p.groups = groups;
        }
    }

    /// Parameters of the projection and of its `to_full` for a chunk of `rows` unfolded rows.
    pub(super) fn projection_params(&self, rows: u32) -> [GramParams; 2] {
        let d = self.d as u32;
        let m = self.outputs();
        let dense = self.base.conv == 0;
        let project = GramParams {
            rows: d,
            out_rows: rows,
            out_cols: m,
            col0: 0,
            block_cols: m,
            splits: 1,
            rows_per_split: d.next_multiple_of(self.config.bk),
            symmetric: 0,
            conv: 2,
            right_stride: m,
            positions: if dense { 1 } else { self.base.positions },
            ..self.base
        };
        let to_full = GramParams {
            rows,
            out_rows: rows,
            out_cols: m,
            col0: 0,
            block_cols: m,
            splits: 1,
            symmetric: 0,
            conv: 0,
            ..self.base
        };
        [project, to_full]
    }

    /// Encodes the projection of a chunk of `rows` rows and its `to_full` (parameter slots
    /// `slot` and `slot + 1`, already written) into `pass`.
    pub(super) fn encode_projection(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        rows: u32,
        slot: usize,
    ) {
        let Some(p) = &self.projection else {
            return;
        };
        let m = p.outputs as u32;
        let tile = self.config.tile();
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &p.groups[0], &[self.params.offset(slot)]);
        pass.dispatch_workgroups(m.div_ceil(tile), rows.div_ceil(tile), 1);
        pass.set_pipeline(&self.kernels.gram.to_full);
        pass.set_bind_group(0, &p.groups[1], &[self.params.offset(slot + 1)]);
        let (x, y) = self.gpu.grid((rows * m).div_ceil(FLAT_THREADS));
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Clears the projection's pairs for a chunk of `rows` rows (the kernel adds into them).
    pub(super) fn clear_projection(&self, encoder: &mut wgpu::CommandEncoder, rows: usize) {
        if let Some(p) = &self.projection {
            let pairs = p.pairs.as_deref().expect("reserved with the inputs");
            debug_assert!(rows <= p.capacity_rows);
            encoder.clear_buffer(pairs, 0, Some((rows * p.outputs * 8) as u64));
        }
    }

    /// The end of the projected form: the row splits folded; `G` as a full f32 matrix left on
    /// the device when it fits one binding (its diagonal and non-finite flag read back), else
    /// read back block by block as compensated pairs; `C0` left on the device as an f32 matrix,
    /// `‖AW‖²` the trace of `Pᵀ P`.
    pub(super) fn finish_projected(&mut self) -> Result<RawGrams> {
        let d = self.d as u64;
        let fits = d * d * 4 + (d + 1) * 4 <= self.gpu.max_binding();
        let mut raw = if self.blocks.len() == 1 && fits {
            self.finish_gram_on_device()?
        } else {
            self.finish_blocks()?
        };
        let (c0, total) = self.projected_on_device()?;
        raw.c0 = Some(c0);
        raw.total = Some(total);
        raw.phases = self.phases;
        Ok(raw)
    }

    /// `G` as a full f32 matrix left on the device, after the row splits of every sum are
    /// folded; its diagonal, its non-finite flag and the pass timestamps read back.
    fn finish_gram_on_device(&mut self) -> Result<RawGrams> {
        let gpu = Arc::clone(&self.gpu);
        let d = self.d;
        let start = Instant::now();
        let full = FullMatrix::new(&gpu, d, d)?;
        let tail_bytes = full.tail_bytes();
        let slots = self.slot_params(0);
        self.params.write(&gpu.queue, &slots);
        let acc_bytes = self.splits as u64 * (d * d * 8) as u64;
        let full_group = self.bind_group(
            &self.placeholder,
            &self.placeholder,
            (16, 16),
            &self.acc[0],
            acc_bytes,
            Some((&full.buffer, full.bytes())),
        );
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("statistics finish"),
            });
        full.clear_tail(&mut encoder);
        self.encode_fold(&mut encoder);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("full matrices"),
                timestamp_writes: self.timer.writes(Phase::Reduce),
            });
            pass.set_pipeline(&self.kernels.gram.to_full);
            pass.set_bind_group(0, &full_group, &[self.params.offset(0)]);
            let (x, y) = gpu.grid((d as u32 * d as u32).div_ceil(FLAT_THREADS));
            pass.dispatch_workgroups(x, y, 1);
        }
        let timestamps = self.timer.resolve(&gpu, &mut encoder)?;
        let stamp_bytes = timestamps.as_ref().map_or(0, |_| self.timer.bytes());
        let total_bytes = tail_bytes + stamp_bytes;
        let staging = gpu.buffer(
            "statistics readback",
            total_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        full.copy_tail(&mut encoder, &staging, 0);
        if let Some(t) = &timestamps {
            encoder.copy_buffer_to_buffer(t, 0, &staging, tail_bytes, stamp_bytes);
        }
        self.phases.reduce += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let words = gpu.submit_and_read(
            encoder,
            &staging,
            total_bytes,
            "reading back the statistics",
        )?;
        self.phases.readback += start.elapsed().as_secs_f64();
        let (tail, stamps) = words.split_at(d + 1);
        if timestamps.is_some() {
            self.use_timestamps(stamps);
        }
        Ok(RawGrams {
            gram: full.into_gram(&gpu, tail),
            cross: None,
            target_gram: None,
            rows: self.rows,
            c0: None,
            total: None,
            phases: self.phases,
        })
    }

    /// `C0` (`D × m`) as an f32 matrix left on the device, from the folded projected sums, and
    /// `‖AW‖²`, the trace of `Pᵀ P`: `to_full` writes both as f32 matrices; only their tails
    /// come back (`C0`'s non-finite flag, `Pᵀ P`'s diagonal).
    fn projected_on_device(&mut self) -> Result<(StatsMatrix, f64)> {
        let gpu = Arc::clone(&self.gpu);
        let (d, m) = (self.d, self.outputs() as usize);
        let start = Instant::now();
        let slots = self.slot_params(0);
        self.params.write(&gpu.queue, &slots);
        let c0 = FullMatrix::new(&gpu, d, m)?;
        let norm = FullMatrix::new(&gpu, m, m)?;
        let mut groups = Vec::with_capacity(2);
        for (sum, full) in [(Sum::Projected, &c0), (Sum::ProjectedNorm, &norm)] {
            let i = self.slots.iter().position(|s| s.sum == sum);
            let i = i.expect("a projected sum");
            let slot = &self.slots[i];
            let acc_bytes = self.splits as u64 * slot.rows as u64 * slot.block.cols as u64 * 8;
            let group = self.bind_group(
                &self.placeholder,
                &self.placeholder,
                (16, 16),
                &self.acc[i],
                acc_bytes,
                Some((&full.buffer, full.bytes())),
            );
            groups.push((i, group, slots[i]));
        }
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("projected statistics"),
            });
        c0.clear_tail(&mut encoder);
        norm.clear_tail(&mut encoder);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("projected statistics (f32)"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.kernels.gram.to_full);
            for (i, group, slot) in &groups {
                pass.set_bind_group(0, group, &[self.params.offset(*i)]);
                let (x, y) = gpu.grid((slot.out_rows * slot.block_cols).div_ceil(FLAT_THREADS));
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        let bytes = c0.tail_bytes() + norm.tail_bytes();
        let staging = gpu.buffer(
            "statistics readback",
            bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        c0.copy_tail(&mut encoder, &staging, 0);
        norm.copy_tail(&mut encoder, &staging, c0.tail_bytes());
        let words = gpu.submit_and_read(encoder, &staging, bytes, "reading back the statistics")?;
        self.phases.readback += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let (c0_tail, norm_tail) = words.split_at(d + 1);
        // The trace of Pᵀ P, added in a fixed order; a non-finite entry of Pᵀ P shows in it.
        let total = norm_tail[..m]
            .iter()
            .map(|&w| f32::from_bits(w) as f64)
            .sum::<f64>();
        let total = if f32::from_bits(norm_tail[m]) == 0.0 {
            total
        } else {
            f64::INFINITY
        };
        let c0 = c0.into_matrix(&gpu, c0_tail, "C0 = BᵀA·W");
        self.phases.host += start.elapsed().as_secs_f64();
        Ok((c0, total))
    }
}
