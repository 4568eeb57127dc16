//! The end of a layer's statistics: the row splits folded into one slice, then either (one
//! column block) full f32 matrices, `C0 = X·W` and `‖AW‖²`'s product on the device with `G` left
//! there, or (several blocks) every sum read back as compensated pairs.

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use super::config::{GramParams, FLAT_THREADS};
use super::work::to_u32;
use super::{GpuStats, Sum};
use crate::backend::gpu::resident::DeviceRows;
use crate::backend::KernelClock;
use crate::error::Result;
use crate::gpu::{Gpu, Phase, PooledBuffer};
use crate::layer::{Gram, RawGrams, StatsMatrix};

impl GpuStats {
    /// after the last chunk's dispatch.
    pub(super) fn encode_fold(&mut self, encoder: &mut wgpu::CommandEncoder) {
        if self.cleared_splits <= 1 {
            return;
        }
        let gpu = Arc::clone(&self.gpu);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("fold splits"),
            timestamp_writes: self.timer.writes(Phase::Reduce),
        });
        pass.set_pipeline(&self.kernels.gram.fold);
        for (i, slot) in self.slots.iter().enumerate() {
            pass.set_bind_group(0, &self.bind_groups[i], &[self.params.offset(i)]);
            let (x, y) = gpu.grid((slot.rows * slot.block.cols).div_ceil(FLAT_THREADS));
            pass.dispatch_workgroups(x, y, 1);
        }
    }

    /// Single-block path: full f32 matrices, `C0` and `(AᵀA)·W` on the device, one readback of
    /// `G`'s diagonal, the non-finite flags and the rows of `‖AW‖²`; `G` and `C0` themselves stay
    /// on the device ([`DeviceRows`]).
    pub(super) fn finish_on_device(&mut self, weight: &[f64], outputs: usize) -> Result<RawGrams> {
        let gpu = Arc::clone(&self.gpu);
        let d = self.d;
        let m = outputs;
        let m32 = to_u32(m, "consumer outputs")?;
        let d32 = d as u32;
        let start = Instant::now();
        let storage = wgpu::BufferUsages::STORAGE;
        // The f32 matrix `X` that the products read (its tail after it is not an operand).
        let full_bytes = (d * d * 4) as u64;
        let pair_bytes = (d * m * 8) as u64;
        // Full f32 matrices of every sum.
        let mut fulls = Vec::with_capacity(self.sums.len());
        for _ in &self.sums {
            fulls.push(FullMatrix::new(&gpu, d, d)?);
        }
        let w32: Vec<f32> = weight.iter().map(|&w| w as f32).collect();
        let w_buffer = gpu.buffer(
            "consumer weight",
            (w32.len() * 4) as u64,
            storage | wgpu::BufferUsages::COPY_DST,
        )?;
        gpu.queue
            .write_buffer(&w_buffer, 0, bytemuck::cast_slice(&w32));
        let with_target = self.sums.len() > 1;
        let products = if with_target { 2 } else { 1 };
        let mut product_acc = Vec::with_capacity(products);
        for _ in 0..products {
            product_acc.push(gpu.buffer(
                "C0 accumulator",
                pair_bytes,
                storage | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            )?);
        }
        // Parameters: the per-sum slots as for a chunk, then the two products (dense, k = D).
        let bk = self.config.bk;
        let mut slots = self.slot_params(0);
        let product = GramParams {
            rows: d32,
            out_rows: d32,
            out_cols: m32,
            col0: 0,
            block_cols: m32,
            splits: 1,
            rows_per_split: d32.next_multiple_of(bk),
            symmetric: 0,
            conv: 0,
            left_stride: d32,
            right_stride: m32,
            ..Default::default()
        };
        let product_slot = slots.len();
        slots.push(product);
        slots.push(product);
        self.params.write(&gpu.queue, &slots);
        // Bind groups for `to_full` (acc → full) and the products (full · W → pairs).
        let acc_bytes = self.splits as u64 * (d * d * 8) as u64;
        let full_groups: Vec<wgpu::BindGroup> = (0..self.sums.len())
            .map(|s| {
                self.bind_group(
                    &self.placeholder,
                    &self.placeholder,
                    (16, 16),
                    &self.acc[s],
                    acc_bytes,
                    Some((&fulls[s].buffer, fulls[s].bytes())),
                )
            })
            .collect();
        // C0 = X·W: the cross sum (AᵀB, read row-major as Xᵀ) or G itself; then (AᵀA)·W.
        let x_full = if with_target { &fulls[1] } else { &fulls[0] };
        let x_full = &x_full.buffer;
        let w_bytes = (w32.len() * 4) as u64;
        let mut product_groups = vec![self.bind_group(
            x_full,
            &w_buffer,
            (full_bytes, w_bytes),
            &product_acc[0],
            pair_bytes,
            None,
        )];
        if with_target {
            product_groups.push(self.bind_group(
                &fulls[2].buffer,
                &w_buffer,
                (full_bytes, w_bytes),
                &product_acc[1],
                pair_bytes,
                None,
            ));
        }
        // C0 as an f32 matrix left on the device (`to_full`: its flag comes back), and the rows
        // of ‖AW‖² = Σ (C0 or (AᵀA)·W) ∘ W (`row_dots`: D pairs come back).
        let c0_full = FullMatrix::new(&gpu, d, m)?;
        let dots_bytes = (d * 8) as u64;
        let dots = gpu.buffer(
            "‖AW‖² rows",
            dots_bytes,
            storage | wgpu::BufferUsages::COPY_SRC,
        )?;
        let c0_group = self.bind_group(
            &self.placeholder,
            &self.placeholder,
            (16, 16),
            &product_acc[0],
            pair_bytes,
            Some((&c0_full.buffer, c0_full.bytes())),
        );
        let dots_group = self.bind_group(
            &self.placeholder,
            &w_buffer,
            (16, w_bytes),
            &product_acc[products - 1],
            pair_bytes,
            Some((&dots, dots_bytes)),
        );

        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("statistics finish"),
            });
        for acc in &product_acc {
            encoder.clear_buffer(acc, 0, None);
        }
        for full in &fulls {
            full.clear_tail(&mut encoder);
        }
        c0_full.clear_tail(&mut encoder);
        self.encode_fold(&mut encoder);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("full matrices"),
                timestamp_writes: self.timer.writes(Phase::Reduce),
            });
            pass.set_pipeline(&self.kernels.gram.to_full);
            for (s, group) in full_groups.iter().enumerate() {
                pass.set_bind_group(0, group, &[self.params.offset(s)]);
                let (x, y) = gpu.grid((d32 * d32).div_ceil(FLAT_THREADS));
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        {
            // Each dispatch is its own usage scope: `to_full` and `row_dots` see the products.
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("C0 = X·W"),
                timestamp_writes: self.timer.writes(Phase::Reduce),
            });
            pass.set_pipeline(&self.pipeline);
            let tile = self.config.tile();
            for (p, group) in product_groups.iter().enumerate() {
                let slot = product_slot + p;
                pass.set_bind_group(0, group, &[self.params.offset(slot)]);
                pass.dispatch_workgroups(m32.div_ceil(tile), d32.div_ceil(tile), 1);
            }
            let offset = [self.params.offset(product_slot)];
            pass.set_pipeline(&self.kernels.gram.to_full);
            pass.set_bind_group(0, &c0_group, &offset);
            let (x, y) = gpu.grid((d32 * m32).div_ceil(FLAT_THREADS));
            pass.dispatch_workgroups(x, y, 1);
            pass.set_pipeline(&self.kernels.gram.row_dots);
            pass.set_bind_group(0, &dots_group, &offset);
            let (x, y) = gpu.grid(d32.div_ceil(FLAT_THREADS));
            pass.dispatch_workgroups(x, y, 1);
        }
        // One readback: G's diagonal and flag, C0's flag, the rows of ‖AW‖², the timestamps.
        let timestamps = self.timer.resolve(&gpu, &mut encoder)?;
        let stamp_bytes = timestamps.as_ref().map_or(0, |_| self.timer.bytes());
        let (g_tail, c0_tail) = (fulls[0].tail_bytes(), c0_full.tail_bytes());
        let total_bytes = g_tail + c0_tail + dots_bytes + stamp_bytes;
        let staging = gpu.buffer(
            "statistics readback",
            total_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        fulls[0].copy_tail(&mut encoder, &staging, 0);
        c0_full.copy_tail(&mut encoder, &staging, g_tail);
        encoder.copy_buffer_to_buffer(&dots, 0, &staging, g_tail + c0_tail, dots_bytes);
        if let Some(t) = &timestamps {
            let at = g_tail + c0_tail + dots_bytes;
            encoder.copy_buffer_to_buffer(t, 0, &staging, at, stamp_bytes);
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
        let start = Instant::now();
        let (tail, rest) = words.split_at(d + 1);
        let (c0_tail, rest) = rest.split_at(d + 1);
        let (dots, stamps) = rest.split_at(2 * d);
        // The rows' pairs added in order: the same result on every run.
        let total = dots
            .chunks_exact(2)
            .map(|w| f32::from_bits(w[0]) as f64 + f32::from_bits(w[1]) as f64)
            .sum();
        if timestamps.is_some() {
            self.use_timestamps(stamps);
        }
        let gram = fulls.swap_remove(0).into_gram(&gpu, tail);
        let c0 = c0_full.into_matrix(&gpu, c0_tail, "C0 = BᵀA·W");
        self.phases.host += start.elapsed().as_secs_f64();
        Ok(RawGrams {
            gram,
            cross: None,
            target_gram: None,
            rows: self.rows,
            c0: Some(c0),
            total: Some(total),
            phases: self.phases,
        })
    }

    /// Several column blocks: each sum read back as (hi, lo) pairs into f64, `C0` and `‖AW‖²`
    /// left to the host.
    pub(super) fn finish_blocks(&mut self) -> Result<RawGrams> {
        let d = self.d;
        let gpu = Arc::clone(&self.gpu);
        let start = Instant::now();
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("fold splits"),
            });
        let slots = self.slot_params(0);
        self.params.write(&gpu.queue, &slots);
        self.encode_fold(&mut encoder);
        // The pass timestamps come back first, with the folds done (and replace the wall-clock
        // kernel and reduction times).
        let stamps = match self.timer.resolve(&gpu, &mut encoder)? {
            Some(stamps) => {
                let bytes = self.timer.bytes();
                let staging = gpu.buffer(
                    "timestamps readback",
                    bytes,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                )?;
                encoder.copy_buffer_to_buffer(&stamps, 0, &staging, 0, bytes);
                Some(gpu.submit_and_read(encoder, &staging, bytes, "reading the timestamps")?)
            }
            None => {
                gpu.queue.submit([encoder.finish()]);
                None
            }
        };
        self.phases.reduce += start.elapsed().as_secs_f64();
        if let Some(words) = stamps {
            self.use_timestamps(&words);
        }
        // The `D × D` sums (the projected ones are read by `finish_projected`).
        let square: Vec<Sum> = self
            .sums
            .iter()
            .copied()
            .filter(|s| !matches!(s, Sum::Projected | Sum::ProjectedNorm))
            .collect();
        let mut totals: Vec<Vec<f64>> = square.iter().map(|_| vec![0.0; d * d]).collect();
        let widest = self.blocks.iter().map(|b| b.cols).max().unwrap_or(1) as u64;
        let staging = gpu.buffer(
            "statistics readback",
            d as u64 * widest * 8,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        for (sum, total) in square.iter().zip(totals.iter_mut()) {
            let blocks = self.slots.iter().enumerate().filter(|(_, s)| s.sum == *sum);
            for (slot, block) in blocks.map(|(i, s)| (i, s.block)) {
                let cols = block.cols as usize;
                let bytes = (d * cols * 8) as u64;
                let start = Instant::now();
                let mut encoder =
                    gpu.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("gram readback"),
                        });
                encoder.copy_buffer_to_buffer(&self.acc[slot], 0, &staging, 0, bytes);
                let words =
                    gpu.submit_and_read(encoder, &staging, bytes, "reading back the statistics")?;
                self.phases.readback += start.elapsed().as_secs_f64();
                let start = Instant::now();
                let col0 = block.col0 as usize;
                total
                    .par_chunks_mut(d)
                    .zip(words.par_chunks_exact(2 * cols))
                    .for_each(|(dst, row)| {
                        for (t, pair) in dst[col0..col0 + cols].iter_mut().zip(row.chunks_exact(2))
                        {
                            *t = f32::from_bits(pair[0]) as f64 + f32::from_bits(pair[1]) as f64;
                        }
                    });
                self.phases.host += start.elapsed().as_secs_f64();
            }
        }
        let start = Instant::now();
        // Symmetric sums hold their upper triangle; the cross sum is AᵀB, the host wants BᵀA.
        for (sum, total) in self.sums.iter().zip(totals.iter_mut()) {
            let upper = total.clone();
            let symmetric = sum.symmetric();
            total.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
                for (j, t) in row.iter_mut().enumerate() {
                    if symmetric {
                        if j < i {
                            *t = upper[j * d + i];
                        }
                    } else {
                        *t = upper[j * d + i];
                    }
                }
            });
        }
        self.phases.host += start.elapsed().as_secs_f64();
        let mut totals = totals.into_iter();
        Ok(RawGrams {
            gram: totals.next().expect("the Gram sum").into(),
            cross: totals.next(),
            target_gram: totals.next(),
            rows: self.rows,
            c0: None,
            total: None,
            phases: self.phases,
        })
    }

    /// Takes the kernel and reduction times from the resolved pass timestamps (`words`), when
    /// every pass was timed.
    pub(super) fn use_timestamps(&mut self, words: &[u32]) {
        let (kernel, reduce) = self.timer.seconds(&self.gpu, words);
        if self.timer.complete() {
            self.phases.kernel = kernel;
            self.phases.reduce = reduce;
            self.phases.clock = KernelClock::Timestamps;
        }
    }

    pub(super) fn empty(&self) -> RawGrams {
        let d = self.d;
        let zeros = || vec![0.0; d * d];
        let with_target = self.sums.len() > 1;
        let projected = self.projection.is_some();
        RawGrams {
            gram: zeros().into(),
            cross: (with_target && !projected).then(zeros),
            target_gram: (with_target && !projected).then(zeros),
            rows: 0,
            c0: projected.then(|| {
                let m = self.outputs() as usize;
                StatsMatrix::from_host(vec![0.0; d * m], m)
            }),
            total: projected.then_some(0.0),
            phases: self.phases,
        }
    }
}

/// An f32 matrix that `to_full` writes on the device: `rows × cols` row-major, then its tail:
/// the diagonal (`rows` values) and the non-finite flag.
pub(super) struct FullMatrix {
    pub(super) buffer: PooledBuffer,
    rows: usize,
    cols: usize,
}

impl FullMatrix {
    pub(super) fn new(gpu: &Arc<Gpu>, rows: usize, cols: usize) -> Result<Self> {
        let bytes = ((rows * cols + rows + 1) * 4) as u64;
        let buffer = gpu.buffer(
            "statistics (f32)",
            bytes,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        )?;
        Ok(Self { buffer, rows, cols })
    }

    /// Bytes of the matrix and its tail.
    pub(super) fn bytes(&self) -> u64 {
        self.matrix_bytes() + self.tail_bytes()
    }

    fn matrix_bytes(&self) -> u64 {
        (self.rows * self.cols * 4) as u64
    }

    pub(super) fn tail_bytes(&self) -> u64 {
        ((self.rows + 1) * 4) as u64
    }

    /// Clears the tail (`to_full` only ever sets the flag).
    pub(super) fn clear_tail(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.buffer, self.matrix_bytes(), Some(self.tail_bytes()));
    }

    /// Copies the tail into `staging` at byte `at`.
    pub(super) fn copy_tail(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        staging: &wgpu::Buffer,
        at: u64,
    ) {
        let (from, bytes) = (self.matrix_bytes(), self.tail_bytes());
        encoder.copy_buffer_to_buffer(&self.buffer, from, staging, at, bytes);
    }

    /// The matrix left on the device, `tail` (its `rows + 1` words, read back) saying whether
    /// every entry is finite; `name` names it in messages.
    pub(super) fn into_matrix(
        self,
        gpu: &Arc<Gpu>,
        tail: &[u32],
        name: &'static str,
    ) -> StatsMatrix {
        let finite = f32::from_bits(tail[self.rows]) == 0.0;
        let (rows, cols) = (self.rows, self.cols);
        let matrix = DeviceRows {
            gpu: Arc::clone(gpu),
            buffer: self.buffer,
            rows,
            cols,
            name,
        };
        StatsMatrix::on_device(rows, cols, Arc::new(matrix), finite)
    }

    /// A square matrix left on the device as the Gram matrix `G`, with its diagonal and
    /// non-finite flag from `tail` (its `rows + 1` words, read back).
    pub(super) fn into_gram(self, gpu: &Arc<Gpu>, tail: &[u32]) -> Gram {
        let diag = tail[..self.rows]
            .iter()
            .map(|&w| f32::from_bits(w) as f64)
            .collect();
        Gram::on_device(self.into_matrix(gpu, tail, "the Gram matrix"), diag)
    }
}
