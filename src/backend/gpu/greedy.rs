//! The greedy state on the GPU: the Schur complement `E` and the residual correlation `R` in
//! f32, scored by `gains.wgsl` and downdated by `downdate.wgsl`.
//!
//! Layout: `E` (D × D, both triangles kept so that any row block is self-contained) and `R`
//! (D × m) are cut into row blocks of whole channels, one buffer each, so that no binding exceeds
//! the device limit; usually there is a single block.
//!
//! One greedy step costs one readback: `score` dispatches the gains of every channel, the argmax
//! (by the host's rule, so it is the channel `run_greedy` will pick) and a copy of that channel's
//! diagonal block `E[J,J]`, and reads back gains, pick and block together. `select(J)` then
//! factors the block on the host in f64 (`linalg::factor_block`), uploads `L⁻¹` and the
//! selection flag, and queues the downdate without waiting. If the host selects a channel other
//! than the predicted one, its block is fetched with one extra readback.
//!
//! Tolerance: pivots are compared with `max(dependence_tol, F32_DEPENDENCE_FLOOR)` times the
//! original Gram diagonal, since `E` is only accurate to f32 rounding.

use std::sync::Arc;

use super::downdate::{UpdateParams, MASK_COLS, MASK_ROWS};
use super::gains::{GainsParams, KS_SHARED};
use super::resident::DeviceRows;
use super::{Kernels, F32_DEPENDENCE_FLOOR};
use crate::backend::{GreedySpec, GreedyState};
use crate::error::{Error, Result};
use crate::gpu::{bind_group, binding, Gpu, ParamSlots, PooledBuffer};
use crate::layer::ChannelLayout;
use crate::linalg::{factor_block, forward_solve};

/// f64 values converted and uploaded at a time when the state is set up.
const UPLOAD_VALUES: usize = 1 << 22;

/// Channels `chan0 .. chan0 + channels` of the state: their rows of `E` and `R`, scratch, and the
/// bind groups of every kernel that touches them.
struct RowBlock {
    chan0: usize,
    channels: usize,
    /// Keeps the block's buffers alive (the bind groups reference them).
    _buffers: Vec<PooledBuffer>,
    /// gains / pick / copy_block.
    gains_group: wgpu::BindGroup,
    /// `V[rows of block] = E_b[:, J] L⁻ᵀ`: a = E_b, b = L⁻¹, out = V.
    v_group: wgpu::BindGroup,
    /// `Y = L⁻¹ R[J,:]` when J is in this block: a = L⁻¹, b = R_b, out = Y.
    y_group: wgpu::BindGroup,
    /// `E_b −= V_b Vᵀ`: a = V, b = V, out = E_b.
    e_group: wgpu::BindGroup,
    /// `R_b −= V_b Y`: a = V, b = Y, out = R_b.
    r_group: wgpu::BindGroup,
}

pub(super) struct GpuGreedy {
    gpu: Arc<Gpu>,
    kernels: Arc<Kernels>,
    layout: ChannelLayout,
    m: usize,
    /// Effective dependence tolerance (floored for f32).
    tol: f64,
    /// Diagonal of the original Gram matrix, f64 (the host-side Cholesky's reference).
    gram_diag: Vec<f64>,
    selected: Vec<bool>,
    blocks: Vec<RowBlock>,
    selected_buf: PooledBuffer,
    linv: PooledBuffer,
    report: PooledBuffer,
    staging: PooledBuffer,
    /// Words of the report: d gains, the pick, ks² block entries.
    report_words: usize,
    gains_params: ParamSlots,
    update_params: ParamSlots,
    /// Kept alive for the bind groups.
    _shared: Vec<PooledBuffer>,
    /// The channel the last `score` predicted and its diagonal block `E[J,J]` (ks × ks).
    speculation: Option<(usize, Vec<f32>)>,
}

fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::Gpu(format!(
            "{what} = {v} exceeds the GPU kernels' u32 indexing"
        ))
    })
}

/// Uploads rows `rows` of a row-major f64 matrix with `cols` columns into `buffer` as f32.
fn upload_rows(
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
    matrix: &[f64],
    rows: std::ops::Range<usize>,
    cols: usize,
) {
    let values = &matrix[rows.start * cols..rows.end * cols];
    let mut scratch = Vec::with_capacity(UPLOAD_VALUES.min(values.len()));
    for (i, chunk) in values.chunks(UPLOAD_VALUES).enumerate() {
        scratch.clear();
        scratch.extend(chunk.iter().map(|&v| v as f32));
        queue.write_buffer(
            buffer,
            (i * UPLOAD_VALUES * 4) as u64,
            bytemuck::cast_slice(&scratch),
        );
    }
}

impl GpuGreedy {
    pub(super) fn new(
        gpu: Arc<Gpu>,
        kernels: Arc<Kernels>,
        spec: GreedySpec<'_>,
        max_block_bytes: u64,
    ) -> Result<Self> {
        let layout = spec.layout;
        let (d, ks, m) = (layout.channels, layout.columns_per_channel, spec.outputs);
        let cols = layout.columns();
        if spec.gram.len() != cols * cols || spec.c0.len() != cols * m {
            return Err(Error::Shape(format!(
                "greedy state: gram has {} entries and c0 {}, expected {cols}×{cols} and {cols}×{m}",
                spec.gram.len(),
                spec.c0.len()
            )));
        }
        if d == 0 || ks == 0 || m == 0 {
            return Err(Error::Shape(format!(
                "greedy state: {d} channels of {ks} columns and {m} outputs; all must be ≥ 1"
            )));
        }
        let d_cols = to_u32(cols, "columns D")?;
        let m32 = to_u32(m, "outputs m")?;
        let ks32 = to_u32(ks, "columns per channel")?;

        // Row blocks of whole channels; every binding within the limit.
        let large_ks = ks > KS_SHARED;
        let row_len = cols.max(m).max(if large_ks { ks + 1 } else { 0 }) as u64;
        let channel_bytes = ks as u64 * row_len * 4;
        let per_block = (max_block_bytes / channel_bytes) as usize;
        if per_block == 0 {
            return Err(Error::Gpu(format!(
                "one channel's rows of the greedy state ({channel_bytes} bytes) exceed the largest \
                 buffer binding ({max_block_bytes} bytes)"
            )));
        }
        let bytes = |values: usize| (values * 4) as u64;
        let report_words = d + 1 + ks * ks;
        let v_bytes = bytes(cols * ks);
        let y_bytes = bytes(ks * m);
        let linv_bytes = bytes(ks * ks);
        let sel_bytes = bytes(d);
        let diag_bytes = bytes(cols);
        let report_bytes = bytes(report_words);
        let single = [
            ("V = E[:,J]·L⁻ᵀ", v_bytes),
            ("Y = L⁻¹·R[J,:]", y_bytes),
            ("the per-step report", report_bytes),
            ("the Gram diagonal", diag_bytes),
            ("the selection flags", sel_bytes),
        ];
        for (what, size) in single {
            if size > max_block_bytes {
                return Err(Error::Gpu(format!(
                    "{what} needs {size} bytes, more than the largest buffer binding \
                     ({max_block_bytes} bytes)"
                )));
            }
        }

        let storage = wgpu::BufferUsages::STORAGE;
        let upload = storage | wgpu::BufferUsages::COPY_DST;
        let queue = &gpu.queue;
        let v = gpu.buffer("greedy V", v_bytes, storage)?;
        let y = gpu.buffer("greedy Y", y_bytes, storage)?;
        let linv = gpu.buffer("greedy L⁻¹", linv_bytes, upload)?;
        let selected_buf = gpu.buffer("greedy selection flags", sel_bytes, upload)?;
        queue.write_buffer(&selected_buf, 0, bytemuck::cast_slice(&vec![0u32; d]));
        let gram_diag = spec.gram.diag();
        // `G` and `C0` left on this device by the statistics are copied there; any other is
        // uploaded.
        let resident = DeviceRows::of(spec.gram.device_matrix(), &gpu, cols, cols);
        let host_gram = match resident {
            Some(_) => None,
            None => Some(spec.gram.values()?),
        };
        let resident_c0 = DeviceRows::of(spec.c0.device_matrix(), &gpu, cols, m);
        let host_c0 = match resident_c0 {
            Some(_) => None,
            None => Some(spec.c0.values()?),
        };
        let mut copies = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("greedy state from the device statistics"),
            });
        let diag_buf = gpu.buffer("greedy Gram diagonal", diag_bytes, upload)?;
        let diag_f32: Vec<f32> = gram_diag.iter().map(|&v| v as f32).collect();
        queue.write_buffer(&diag_buf, 0, bytemuck::cast_slice(&diag_f32));
        let report = gpu.buffer(
            "greedy report",
            report_bytes,
            storage | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        )?;
        let staging = gpu.buffer(
            "greedy report readback",
            report_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let nb = d.div_ceil(per_block);
        let gains_params = ParamSlots::new::<GainsParams>(&gpu, "gains params", nb)?;
        let update_params =
            ParamSlots::new::<UpdateParams>(&gpu, "downdate params", nb * nb + 2 * nb + 1)?;
        let tol = spec.dependence_tol.max(F32_DEPENDENCE_FLOOR);

        let device = &gpu.device;
        let group = |label: &str,
                     layout: &wgpu::BindGroupLayout,
                     resources: Vec<wgpu::BindingResource<'_>>| {
            bind_group(device, Some(label), layout, resources)
        };

        let mut blocks = Vec::with_capacity(nb);
        let mut gains_slots = Vec::with_capacity(nb);
        for chan0 in (0..d).step_by(per_block) {
            let channels = per_block.min(d - chan0);
            let rows = chan0 * ks..(chan0 + channels) * ks;
            let n_rows = rows.len();
            let schur_bytes = (n_rows * cols * 4) as u64;
            let resid_bytes = (n_rows * m * 4) as u64;
            let schur = gpu.buffer("greedy E block", schur_bytes, upload)?;
            let resid = gpu.buffer("greedy R block", resid_bytes, upload)?;
            let solved = gpu.buffer("greedy gains scratch", resid_bytes, storage)?;
            let factor_bytes = if large_ks {
                (channels * (ks * ks + ks) * 4) as u64
            } else {
                16
            };
            let factor = gpu.buffer("greedy factor scratch", factor_bytes, storage)?;
            let row_list: Vec<usize> = rows.clone().collect();
            match (resident, host_gram) {
                (Some(g), _) => {
                    g.encode_rows(&mut copies, &row_list, &schur, 0);
                }
                (None, Some(host)) => upload_rows(queue, &schur, host, rows.clone(), cols),
                (None, None) => unreachable!("G is read back when it is not on this device"),
            }
            match (resident_c0, host_c0) {
                (Some(c0), _) => {
                    c0.encode_rows(&mut copies, &row_list, &resid, 0);
                }
                (None, Some(host)) => upload_rows(queue, &resid, host, rows.clone(), m),
                (None, None) => unreachable!("C0 is read back when it is not on this device"),
            }
            gains_slots.push(GainsParams {
                chan0: chan0 as u32,
                channels: channels as u32,
                ks: ks32,
                d_cols,
                m: m32,
                total_channels: d as u32,
                tol: tol as f32,
                _pad: 0,
            });
            let gains_group = group(
                "gains",
                &kernels.gains.layout,
                vec![
                    gains_params.binding(),
                    binding(&schur, schur_bytes),
                    binding(&resid, resid_bytes),
                    binding(&solved, resid_bytes),
                    binding(&factor, factor_bytes),
                    binding(&diag_buf, diag_bytes),
                    binding(&selected_buf, sel_bytes),
                    binding(&report, report_bytes),
                ],
            );
            let dd = &kernels.downdate.layout;
            let v_group = group(
                "downdate V",
                dd,
                vec![
                    update_params.binding(),
                    binding(&schur, schur_bytes),
                    binding(&linv, linv_bytes),
                    binding(&v, v_bytes),
                    binding(&selected_buf, sel_bytes),
                ],
            );
            let y_group = group(
                "downdate Y",
                dd,
                vec![
                    update_params.binding(),
                    binding(&linv, linv_bytes),
                    binding(&resid, resid_bytes),
                    binding(&y, y_bytes),
                    binding(&selected_buf, sel_bytes),
                ],
            );
            let e_group = group(
                "downdate E",
                dd,
                vec![
                    update_params.binding(),
                    binding(&v, v_bytes),
                    binding(&v, v_bytes),
                    binding(&schur, schur_bytes),
                    binding(&selected_buf, sel_bytes),
                ],
            );
            let r_group = group(
                "downdate R",
                dd,
                vec![
                    update_params.binding(),
                    binding(&v, v_bytes),
                    binding(&y, y_bytes),
                    binding(&resid, resid_bytes),
                    binding(&selected_buf, sel_bytes),
                ],
            );
            blocks.push(RowBlock {
                chan0,
                channels,
                _buffers: vec![schur, resid, solved, factor],
                gains_group,
                v_group,
                y_group,
                e_group,
                r_group,
            });
        }
        gains_params.write(queue, &gains_slots);
        queue.submit([copies.finish()]);
        Ok(Self {
            gpu: Arc::clone(&gpu),
            kernels,
            layout,
            m,
            tol,
            gram_diag,
            selected: vec![false; d],
            blocks,
            selected_buf,
            linv,
            report,
            staging,
            report_words,
            gains_params,
            update_params,
            _shared: vec![v, y, diag_buf],
            speculation: None,
        })
    }

    /// Encodes `copy_block` for every row block: the block holding the channel in report[d]
    /// copies its diagonal block into the report.
    fn encode_copy_block(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.kernels.gains.copy_block);
        for (b, block) in self.blocks.iter().enumerate() {
            pass.set_bind_group(0, &block.gains_group, &[self.gains_params.offset(b)]);
            pass.dispatch_workgroups(1, 1, 1);
        }
    }

    fn read_report(&self, mut encoder: wgpu::CommandEncoder, what: &str) -> Result<Vec<u32>> {
        let bytes = (self.report_words * 4) as u64;
        encoder.copy_buffer_to_buffer(&self.report, 0, &self.staging, 0, bytes);
        self.gpu
            .submit_and_read(encoder, &self.staging, bytes, what)
    }

    /// `E[J,J]` of `channel` when `score` did not predict it: one extra round trip.
    fn fetch_block(&self, channel: usize) -> Result<Vec<f32>> {
        let d = self.layout.channels;
        self.gpu.queue.write_buffer(
            &self.report,
            (d * 4) as u64,
            bytemuck::bytes_of(&(channel as u32)),
        );
        let mut encoder = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("fetch block"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("copy block"),
                timestamp_writes: None,
            });
            self.encode_copy_block(&mut pass);
        }
        let words = self.read_report(encoder, "reading back a diagonal block")?;
        Ok(words[d + 1..].iter().map(|&w| f32::from_bits(w)).collect())
    }

    /// The downdate's four products for channel `j` (J0 = j·ks), in dispatch order: V per block,
    /// Y, E per block pair, R per block.
    fn update_slots(&self, j: usize) -> Vec<UpdateParams> {
        let ks = self.layout.columns_per_channel;
        let cols = self.layout.columns() as u32;
        let m = self.m as u32;
        let ks32 = ks as u32;
        let j0 = (j * ks) as u32;
        let row0 = |b: &RowBlock| (b.chan0 * ks) as u32;
        let rows = |b: &RowBlock| (b.channels * ks) as u32;
        let base = UpdateParams {
            depth: ks32,
            ks: ks32,
            ..Default::default()
        };
        let mut slots = Vec::with_capacity(self.update_params.count);
        for b in &self.blocks {
            slots.push(UpdateParams {
                rows: rows(b),
                cols: ks32,
                a_off: j0,
                a_row: cols,
                a_depth: 1,
                b_off: 0,
                b_depth: 1,
                b_col: ks32,
                out_off: row0(b) * ks32,
                out_row: ks32,
                accumulate: 0,
                row_chan0: b.chan0 as u32,
                mask: MASK_ROWS,
                ..base
            });
        }
        let jb = &self.blocks[self.block_of(j)];
        slots.push(UpdateParams {
            rows: ks32,
            cols: m,
            a_off: 0,
            a_row: ks32,
            a_depth: 1,
            b_off: (j0 - row0(jb)) * m,
            b_depth: m,
            b_col: 1,
            out_off: 0,
            out_row: m,
            accumulate: 0,
            mask: 0,
            ..base
        });
        for b in &self.blocks {
            for c in &self.blocks {
                slots.push(UpdateParams {
                    rows: rows(b),
                    cols: rows(c),
                    a_off: row0(b) * ks32,
                    a_row: ks32,
                    a_depth: 1,
                    b_off: row0(c) * ks32,
                    b_depth: 1,
                    b_col: ks32,
                    out_off: row0(c),
                    out_row: cols,
                    accumulate: 1,
                    row_chan0: b.chan0 as u32,
                    col_chan0: c.chan0 as u32,
                    mask: MASK_ROWS | MASK_COLS,
                    ..base
                });
            }
        }
        for b in &self.blocks {
            slots.push(UpdateParams {
                rows: rows(b),
                cols: m,
                a_off: row0(b) * ks32,
                a_row: ks32,
                a_depth: 1,
                b_off: 0,
                b_depth: m,
                b_col: 1,
                out_off: 0,
                out_row: m,
                accumulate: 1,
                row_chan0: b.chan0 as u32,
                mask: MASK_ROWS,
                ..base
            });
        }
        slots
    }

    fn block_of(&self, channel: usize) -> usize {
        self.blocks
            .iter()
            .position(|b| channel < b.chan0 + b.channels)
            .expect("channel in range")
    }

    fn downdate(&mut self, channel: usize) -> Result<()> {
        let ks = self.layout.columns_per_channel;
        let block = match self.speculation.take() {
            Some((j, block)) if j == channel => block,
            _ => self.fetch_block(channel)?,
        };
        let j0 = channel * ks;
        let (l, kept) = factor_block(
            block.iter().map(|&v| v as f64).collect(),
            &self.gram_diag[j0..j0 + ks],
            self.tol,
        );
        self.selected[channel] = true;
        let queue = &self.gpu.queue;
        queue.write_buffer(
            &self.selected_buf,
            (channel * 4) as u64,
            bytemuck::bytes_of(&1u32),
        );
        if !kept.iter().any(|&k| k) {
            return Ok(()); // Fully dependent block: nothing left to remove.
        }
        let mut linv = vec![0.0; ks * ks];
        for i in 0..ks {
            linv[i * ks + i] = 1.0;
        }
        forward_solve(&l, ks, &kept, &mut linv, ks);
        let linv32: Vec<f32> = linv.iter().map(|&v| v as f32).collect();
        queue.write_buffer(&self.linv, 0, bytemuck::cast_slice(&linv32));
        let slots = self.update_slots(channel);
        self.update_params.write(queue, &slots);

        let mut encoder = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("downdate"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("downdate"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.kernels.downdate.rank_update);
            let nb = self.blocks.len();
            let jb = self.block_of(channel);
            let mut groups: Vec<&wgpu::BindGroup> = Vec::with_capacity(slots.len());
            groups.extend(self.blocks.iter().map(|b| &b.v_group));
            groups.push(&self.blocks[jb].y_group);
            for b in &self.blocks {
                groups.extend(std::iter::repeat_n(&b.e_group, nb));
            }
            groups.extend(self.blocks.iter().map(|b| &b.r_group));
            for (i, (params, group)) in slots.iter().zip(groups).enumerate() {
                pass.set_bind_group(0, group, &[self.update_params.offset(i)]);
                let (x, y) = params.groups();
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
        Ok(())
    }
}

impl GreedyState for GpuGreedy {
    fn score(&mut self, gains: &mut [f64]) -> Result<()> {
        let d = self.layout.channels;
        if gains.len() != d {
            return Err(Error::InvalidArgument(format!(
                "gains has {} entries for {d} channels",
                gains.len()
            )));
        }
        let gpu = Arc::clone(&self.gpu);
        gpu.scoped("scoring the channels", || {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("score"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("score"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&self.kernels.gains.gains);
                for (b, block) in self.blocks.iter().enumerate() {
                    pass.set_bind_group(0, &block.gains_group, &[self.gains_params.offset(b)]);
                    let (x, y) = gpu.grid(block.channels as u32);
                    pass.dispatch_workgroups(x, y, 1);
                }
                pass.set_pipeline(&self.kernels.gains.pick);
                pass.set_bind_group(
                    0,
                    &self.blocks[0].gains_group,
                    &[self.gains_params.offset(0)],
                );
                pass.dispatch_workgroups(1, 1, 1);
                self.encode_copy_block(&mut pass);
            }
            let words = self.read_report(encoder, "reading back the gains")?;
            for (g, &w) in gains.iter_mut().zip(&words[..d]) {
                *g = f32::from_bits(w) as f64;
            }
            let pick = words[d] as usize;
            self.speculation = (pick < d).then(|| {
                (
                    pick,
                    words[d + 1..].iter().map(|&w| f32::from_bits(w)).collect(),
                )
            });
            Ok(())
        })
    }

    fn select(&mut self, channel: usize) -> Result<()> {
        if channel >= self.layout.channels || self.selected[channel] {
            return Err(Error::InvalidArgument(format!(
                "channel {channel} cannot be selected (out of range or already selected)"
            )));
        }
        let gpu = Arc::clone(&self.gpu);
        gpu.scoped("downdating the greedy state", || self.downdate(channel))
    }
}
