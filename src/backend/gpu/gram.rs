//! Gram statistics on the GPU (`shaders/gram.wgsl`): `BᵀB`, and `AᵀB`, `AᵀA` for a separate
//! target, accumulated batch by batch with the unfolding done in the shader, then `C0 = X·W` and
//! `‖AW‖²` computed where the sums live.
//!
//! Per batch the host uploads the raw consumer inputs (f32, or f16 packed two per u32), in chunks
//! of whole images that fit one binding (device-resident activations are copied on the device
//! instead). Per chunk, `pad_inputs` writes them as the f32 operand the tile kernel reads (conv
//! planes framed by their zero padding, f16 widened; skipped for f32 inputs that need neither),
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
//! device's largest binding (or [`GpuBackend::with_max_block_bytes`](super::GpuBackend::with_max_block_bytes))
//! is cut into column blocks, each its own buffer and dispatch; then the sums are read back as
//! pairs and `C0`, `‖AW‖²` are left to the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::resident::DeviceGram;
use super::tensor::DeviceTensor;
use super::timing::{PassTimer, Phase};
use super::{bind_group_layout, binding, Gpu, ParamSlots, PooledBuffer, Slot};
use crate::backend::{
    check_stats_batch, check_stats_shapes, KernelClock, StatsAccumulator, StatsPhases, StatsSpec,
};
use crate::error::{Error, Result};
use crate::layer::{Consumer, Gram, RawGrams, Unfolding};
use crate::tensor::TensorView;

/// Threads per workgroup of `fold_splits` and `to_full` (`FLAT_THREADS` in gram.wgsl).
const FLAT_THREADS: u32 = 256;
/// Most values one thread stages per operand and step (`MAX_LOADS` in gram.wgsl).
const MAX_LOADS: u32 = 16;
/// Rows folded at a time (`FOLD_ROWS` in gram.wgsl); every `bk` divides it.
const FOLD_ROWS: u32 = 4096;
/// Most row splits (accumulator slices) per sum.
const MAX_SPLITS: u32 = 64;
/// Most bytes spent on extra accumulator slices for row splits, over all sums.
const SPLIT_MEMORY_BUDGET: u64 = 512 << 20;
/// Largest input chunk uploaded at once, in bytes.
const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// Default of [`GpuBackend::with_gather_bytes`](super::GpuBackend::with_gather_bytes): batches
/// are gathered on the device up to this many bytes of inputs before the kernels run
/// over all of them: small batches (a forward pass hands over 64 or 128 images at a time) would
/// otherwise give each row split too few rows, and the per-dispatch folds would cost as much as
/// the products.
pub(super) const GATHER_BYTES: u64 = 64 << 20;
/// Fewest unfolded rows per row split in one dispatch (fewer splits when a chunk is small): a
/// split ends with a fold of its whole tile into the accumulator, which costs about as much as
/// a few hundred rows of products.
const MIN_SPLIT_ROWS: u32 = 1024;

/// A configuration of the tiled matmul core: `wg × wg` threads per workgroup, each owning an
/// 8 × 8 block of the `8·wg`-square output tile, and `bk` rows staged per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TileConfig {
    /// Threads per workgroup axis (8 or 16).
    pub wg: u32,
    /// Rows staged per step (8, 16, or 32 with `wg = 16`: a thread stages at most 16 values).
    pub bk: u32,
}

impl TileConfig {
    /// Every configuration the kernels support, the largest tile first.
    pub const ALL: [TileConfig; 5] = [
        TileConfig { wg: 16, bk: 16 },
        TileConfig { wg: 16, bk: 8 },
        TileConfig { wg: 16, bk: 32 },
        TileConfig { wg: 8, bk: 16 },
        TileConfig { wg: 8, bk: 8 },
    ];

    /// Output tile edge (`8·wg`).
    pub fn tile(&self) -> u32 {
        8 * self.wg
    }

    /// Workgroup memory the kernel declares: two operands × two stages × `bk` staged rows of
    /// `2·wg + 1` vec4s.
    pub fn workgroup_bytes(&self) -> u32 {
        2 * 2 * self.bk * (2 * self.wg + 1) * 16
    }

    /// Whether the device's limits allow this configuration.
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        let threads = self.wg * self.wg;
        self.is_valid()
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
            && threads <= limits.max_compute_invocations_per_workgroup
            && threads <= limits.max_compute_workgroup_size_x
    }

    /// Whether the shader's divisibility assumptions hold (see gram.wgsl).
    pub fn is_valid(&self) -> bool {
        let threads = self.wg * self.wg;
        matches!(self.wg, 8 | 16)
            && matches!(self.bk, 8 | 16 | 32)
            && threads.is_multiple_of(self.bk)
            && 8 * self.bk / self.wg <= MAX_LOADS
            && FOLD_ROWS.is_multiple_of(self.bk)
    }

    /// The preferred configuration that fits `limits` (the first of [`TileConfig::ALL`]).
    pub fn default_for(limits: &wgpu::Limits) -> Option<TileConfig> {
        Self::ALL.into_iter().find(|c| c.fits(limits))
    }
}

impl std::str::FromStr for TileConfig {
    type Err = Error;

    /// `WGxBK`, e.g. `16x16`: threads per workgroup axis and rows staged per step.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "tile configuration {s:?}: expected WGxBK, one of 16x16, 16x8, 16x32, 8x16, 8x8"
            ))
        };
        let (wg, bk) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let config = TileConfig {
            wg: wg.trim().parse().map_err(|_| bad())?,
            bk: bk.trim().parse().map_err(|_| bad())?,
        };
        if config.is_valid() {
            Ok(config)
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for TileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.tile();
        write!(
            f,
            "tile {t}×{t}, {}×{} threads, bk {}",
            self.wg, self.wg, self.bk
        )
    }
}

/// The compiled `gram.wgsl` kernels: `gram_tile` per tile configuration (compiled on first use),
/// `fold_splits`, `to_full` and `pad_inputs`.
pub(super) struct GramKernels {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    tiles: Mutex<HashMap<TileConfig, wgpu::ComputePipeline>>,
    fold: wgpu::ComputePipeline,
    to_full: wgpu::ComputePipeline,
    pad: wgpu::ComputePipeline,
}

const SOURCE: &str = super::shaders::GRAM;

impl GramKernels {
    pub(super) fn new(device: &wgpu::Device, checked: bool) -> Self {
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
        let module = super::shader_module(device, "gram.wgsl", SOURCE, checked);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("gram.wgsl"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let small = TileConfig { wg: 8, bk: 8 };
        let fold = compute_pipeline(device, &pipeline_layout, &module, "fold_splits", small);
        let to_full = compute_pipeline(device, &pipeline_layout, &module, "to_full", small);
        let pad = compute_pipeline(device, &pipeline_layout, &module, "pad_inputs", small);
        Self {
            layout,
            pipeline_layout,
            module,
            tiles: Mutex::new(HashMap::new()),
            fold,
            to_full,
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
    super::pipelines::tiled_pipeline(
        device,
        layout,
        module,
        entry,
        [config.wg, config.wg, config.bk],
    )
}

/// `GramParams` of gram.wgsl (field for field; `tests/gpu_core.rs` checks the layout with naga).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GramParams {
    /// Rows of L and R in this chunk.
    pub rows: u32,
    /// Rows of the result.
    pub out_rows: u32,
    /// Columns of the whole result.
    pub out_cols: u32,
    /// First output column of this block.
    pub col0: u32,
    /// Width of this block.
    pub block_cols: u32,
    /// Row splits.
    pub splits: u32,
    /// Rows per split (a multiple of `bk`).
    pub rows_per_split: u32,
    /// 1: L = R, upper triangle only.
    pub symmetric: u32,
    /// `pad_inputs`: 1 when the uploaded values are f16 pairs; 0: f32.
    pub half_inputs: u32,
    /// 1: implicit im2col; 0: dense rows.
    pub conv: u32,
    /// Dense: values per row of L.
    pub left_stride: u32,
    /// Dense: values per row of R.
    pub right_stride: u32,
    /// Conv: values per padded image (as the tile kernel reads them).
    pub image_len: u32,
    /// Conv: output positions per image.
    pub positions: u32,
    /// `pad_inputs`: uploaded plane height.
    pub height: u32,
    /// `pad_inputs`: uploaded plane width.
    pub width: u32,
    /// `pad_inputs`: values per uploaded image.
    pub raw_image_len: u32,
    /// `pad_inputs`: padded plane width `Wp`.
    pub padded_width: u32,
    /// `pad_inputs`: padded plane `Hp·Wp`.
    pub padded_plane: u32,
    /// `pad_inputs`: zero rows above each plane.
    pub pad_top: u32,
    /// `pad_inputs`: zero columns left of each plane.
    pub pad_left: u32,
    /// `pad_inputs`: values to write.
    pub pad_count: u32,
    /// Always 0: keeps the driver from simplifying the compensated sums away (see gram.wgsl).
    pub zero: u32,
}

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

/// Where a batch's input values come from.
#[derive(Clone, Copy)]
enum Source<'s> {
    /// Host memory (the batch's own values, or the part being gathered).
    Host(&'s [f32]),
    /// A buffer on the accumulator's device, from this byte offset (the whole batch: the part
    /// being gathered is addressed by its flat index).
    Device(&'s wgpu::Buffer, u64),
}

pub(super) struct GpuStats {
    gpu: Arc<Gpu>,
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
    /// `acc[s · blocks + b]`: sum `s`, column block `b`: `splits × D × cols` (hi, lo) pairs.
    acc: Vec<PooledBuffer>,
    /// One parameter slot per (sum, block), same indexing as `acc`, then two for the products.
    params: ParamSlots,
    base: GramParams,
    /// Conv tables (or 16-byte placeholders for a dense consumer) and the unused `full` binding.
    columns: PooledBuffer,
    offsets: PooledBuffer,
    placeholder: PooledBuffer,
    /// Values per image of the operands the tile kernel reads (padded planes for a conv), and
    /// whether `pad_inputs` writes them from the uploaded batch (conv padding, or f16 uploads
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
    /// `pad_inputs`' outputs, when `padded`.
    padded_inputs: Option<PooledBuffer>,
    padded_targets: Option<PooledBuffer>,
    /// Same indexing as `acc`; built when the input buffers are (re)allocated.
    bind_groups: Vec<wgpu::BindGroup>,
    /// `pad_inputs` of the inputs, then of the targets (empty unless `padded`).
    pad_groups: Vec<wgpu::BindGroup>,
    rows: usize,
    in_flight: Option<wgpu::SubmissionIndex>,
    half_scratch: Vec<f16>,
    timer: PassTimer,
    phases: StatsPhases,
}

fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::Gpu(format!(
            "{what} = {v} exceeds the GPU kernels' u32 indexing"
        ))
    })
}

/// Workgroups that keep the adapter busy: wgpu does not report compute units, so by device type
/// (a large discrete GPU has ~100+ multiprocessors, each taking a few workgroups).
fn target_workgroups(gpu: &Gpu) -> u32 {
    match gpu.info.device_type {
        wgpu::DeviceType::DiscreteGpu => 1024,
        wgpu::DeviceType::IntegratedGpu => 128,
        wgpu::DeviceType::Cpu => 4 * rayon::current_num_threads() as u32,
        wgpu::DeviceType::VirtualGpu | wgpu::DeviceType::Other => 256,
    }
}

/// Split count and column blocks of a `d × d` result held as `sums` accumulators of (hi, lo)
/// pairs: enough workgroups for the adapter, within the memory budget and one binding per block.
fn plan_work(
    d: u32,
    tile: u32,
    sums: usize,
    target: u32,
    forced_splits: Option<u32>,
    max_block_bytes: u64,
) -> Result<(u32, Vec<ColumnBlock>)> {
    let tiles_1d = d.div_ceil(tile);
    let upper_tiles = tiles_1d * (tiles_1d + 1) / 2;
    let mut splits = forced_splits
        .unwrap_or_else(|| target.div_ceil(upper_tiles))
        .clamp(1, MAX_SPLITS);
    let slice_bytes = d as u64 * d as u64 * 8;
    while splits > 1 && splits as u64 * slice_bytes * sums as u64 > SPLIT_MEMORY_BUDGET {
        splits -= 1;
    }
    let column_bytes = d as u64 * 8; // one column of one slice
    let want_cols = (d as u64).min(tile as u64);
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
    if block_cols >= tile && block_cols < d {
        block_cols -= block_cols % tile;
    }
    let blocks = (0..d)
        .step_by(block_cols as usize)
        .map(|col0| ColumnBlock {
            col0,
            cols: block_cols.min(d - col0),
        })
        .collect();
    Ok((splits, blocks))
}

/// Bytes one image takes uploaded (f32, or f16 with `half_inputs`).
fn upload_bytes(unfolding: &Unfolding, half_inputs: bool) -> usize {
    unfolding.image_len() * if half_inputs { 2 } else { 4 }
}

/// Bytes one image takes in the larger of its device buffers: the uploaded one and, when
/// `padded`, the f32 operand of `operand_len` values `pad_inputs` writes.
fn device_image_bytes(
    unfolding: &Unfolding,
    half_inputs: bool,
    operand_len: usize,
    padded: bool,
) -> u64 {
    let upload = upload_bytes(unfolding, half_inputs);
    (if padded {
        upload.max(operand_len * 4)
    } else {
        upload
    }) as u64
}

impl GpuStats {
    pub(super) fn new(
        gpu: Arc<Gpu>,
        spec: StatsSpec,
        half_inputs: bool,
        max_block_bytes: u64,
        config: TileConfig,
        forced_splits: Option<u32>,
        gather_bytes: u64,
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
        let sums = if spec.with_target {
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

        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let placeholder = gpu.buffer("placeholder", 16, storage)?;
        // The tables address the padded planes; the parameters carry both geometries.
        let raw_len = to_u32(unfolding.image_len(), "values per image")?;
        let (columns, offsets, base, operand_len, framed) = match unfolding.consumer {
            Consumer::Conv(g) => {
                let [kh, kw] = g.kernel;
                let [pad_h, pad_w] = g.padding;
                let (hp, wp) = (unfolding.height + 2 * pad_h, unfolding.width + 2 * pad_w);
                let plane = hp * wp;
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
                let operand_len = unfolding.channels * plane;
                let base = GramParams {
                    conv: 1,
                    image_len: to_u32(operand_len, "values per padded image")?,
                    positions: to_u32(oh * ow, "output positions")?,
                    height: to_u32(unfolding.height, "input height")?,
                    width: to_u32(unfolding.width, "input width")?,
                    padded_width: to_u32(wp, "padded width")?,
                    padded_plane: to_u32(plane, "padded plane")?,
                    pad_top: to_u32(pad_h, "padding")?,
                    pad_left: to_u32(pad_w, "padding")?,
                    ..Default::default()
                };
                (columns, offsets, base, operand_len, pad_h > 0 || pad_w > 0)
            }
            Consumer::Linear | Consumer::FlattenLinear => {
                let columns = gpu.buffer("placeholder", 16, storage)?;
                let offsets = gpu.buffer("placeholder", 16, storage)?;
                // For `pad_inputs` (f16 widening only), an image is one plane of one row.
                let base = GramParams {
                    left_stride: d32,
                    right_stride: d32,
                    image_len: raw_len,
                    height: 1,
                    width: raw_len,
                    padded_width: raw_len,
                    padded_plane: raw_len,
                    ..Default::default()
                };
                (columns, offsets, base, unfolding.image_len(), false)
            }
        };
        let padded = framed || half_inputs;
        // A chunk's uploaded and padded buffers each fit one binding.
        let image_bytes = device_image_bytes(&unfolding, half_inputs, operand_len, padded);
        let chunk_limit = max_block_bytes.min(MAX_CHUNK_BYTES);
        let chunk_images = (chunk_limit / image_bytes) as usize;
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
            half_inputs: half_inputs as u32,
            raw_image_len: raw_len,
            ..base
        };

        // Cleared slice by slice as the kernels first use them (`dispatch_pending`).
        let mut acc = Vec::with_capacity(sums.len() * blocks.len());
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
                acc.push(buffer);
            }
        }
        // Slots: one per (sum, block), then `pad_inputs`, then the two products of `finish`.
        let params = ParamSlots::new::<GramParams>(&gpu, "gram params", acc.len() + 3)?;
        let pipeline = gpu.gram.tile(&gpu.device, config);
        let timer = PassTimer::new(&gpu);
        Ok(Self {
            gpu,
            unfolding,
            d,
            half_inputs,
            config,
            pipeline,
            splits,
            cleared_splits: 0,
            blocks,
            sums,
            acc,
            params,
            base,
            columns,
            offsets,
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
            in_flight: None,
            half_scratch: Vec::new(),
            timer,
            phases: StatsPhases {
                setup: setup_start.elapsed().as_secs_f64(),
                ..StatsPhases::default()
            },
        })
    }

    /// Parameters of the (sum, block) dispatches for a chunk of `rows` unfolded rows.
    fn slot_params(&self, rows: u32) -> Vec<GramParams> {
        let bk = self.config.bk;
        let splits = self.splits.min(rows.div_ceil(MIN_SPLIT_ROWS)).max(1);
        let rows_per_split = rows.div_ceil(splits).next_multiple_of(bk).max(bk);
        // What `fold_splits` adds up: the slices the kernels have written so far.
        let folded = self.cleared_splits.max(1);
        self.sums
            .iter()
            .flat_map(|sum| {
                self.blocks.iter().map(move |block| GramParams {
                    rows,
                    rows_per_split,
                    col0: block.col0,
                    block_cols: block.cols,
                    symmetric: sum.symmetric() as u32,
                    splits: folded,
                    ..self.base
                })
            })
            .collect()
    }

    fn bind_group(
        &self,
        left: &wgpu::Buffer,
        right: &wgpu::Buffer,
        operand_bytes: (u64, u64),
        acc: &wgpu::Buffer,
        acc_bytes: u64,
        full: Option<(&wgpu::Buffer, u64)>,
    ) -> wgpu::BindGroup {
        let (full, full_bytes) = full.unwrap_or((&self.placeholder, 16));
        let entries = [
            self.params.binding(),
            binding(left, operand_bytes.0),
            binding(right, operand_bytes.1),
            binding(acc, acc_bytes),
            binding(&self.columns, self.columns.size()),
            binding(&self.offsets, self.offsets.size()),
            binding(full, full_bytes),
        ];
        let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
            .into_iter()
            .enumerate()
            .map(|(i, resource)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            })
            .collect();
        self.gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("gram"),
                layout: &self.gpu.gram.layout,
                entries: &entries,
            })
    }

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
        let raw_inputs = self.inputs.as_deref().expect("just allocated");
        let raw_targets = self.targets.as_deref().unwrap_or(raw_inputs);
        let inputs = self.padded_inputs.as_deref().unwrap_or(raw_inputs);
        let targets = self.padded_targets.as_deref().unwrap_or(raw_targets);
        let mut groups = Vec::with_capacity(self.acc.len());
        for (s, sum) in self.sums.iter().enumerate() {
            let (left, right) = match sum {
                Sum::Gram => (inputs, inputs),
                Sum::Cross => (targets, inputs),
                Sum::TargetGram => (targets, targets),
            };
            for (b, block) in self.blocks.iter().enumerate() {
                let acc = &self.acc[s * self.blocks.len() + b];
                let acc_bytes = self.splits as u64 * self.d as u64 * block.cols as u64 * 8;
                let operands = (operand_bytes, operand_bytes);
                groups.push(self.bind_group(left, right, operands, acc, acc_bytes, None));
            }
        }
        let mut pad_groups = Vec::new();
        if self.padded {
            let mut pairs = vec![(raw_inputs, inputs)];
            if with_target {
                pairs.push((raw_targets, targets));
            }
            for (raw, padded) in pairs {
                pad_groups.push(self.bind_group(
                    raw,
                    raw,
                    (raw_bytes, raw_bytes),
                    &self.placeholder,
                    16,
                    Some((padded, operand_bytes)),
                ));
            }
        }
        self.bind_groups = groups;
        self.pad_groups = pad_groups;
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
    /// uploaded from the host or copied on the device, targets uploaded.
    fn upload_pending(
        &mut self,
        inputs: Source<'_>,
        target: Option<&[f32]>,
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
        if let (Some(t), Some(buffer)) = (target, self.targets.as_deref()) {
            Self::upload(
                &gpu.queue,
                buffer,
                offset,
                t,
                half.as_deref_mut(),
                "target",
                first_index,
            )?;
            self.phases.uploaded_bytes += batch_bytes;
        }
        match inputs {
            Source::Host(values) => {
                Self::upload(
                    &gpu.queue,
                    inputs_buffer,
                    offset,
                    values,
                    half,
                    "inputs",
                    first_index,
                )?;
                self.phases.uploaded_bytes += batch_bytes;
            }
            Source::Device(buffer, at) => {
                // f32 on both sides (the caller falls back to a readback for f16 inputs); the
                // copy is submitted now, while the executor keeps the source buffer alive.
                debug_assert!(!self.half_inputs);
                let bytes = 4 * len as u64;
                let mut encoder =
                    gpu.device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("statistics inputs from a device tap"),
                        });
                encoder.copy_buffer_to_buffer(
                    buffer,
                    at + 4 * first_index as u64,
                    inputs_buffer,
                    offset,
                    bytes,
                );
                gpu.queue.submit([encoder.finish()]);
                self.phases.device_bytes += bytes;
            }
        }
        self.pending_images += images;
        self.phases.upload += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Gathers a checked batch of `n` images into the input buffers, summing them chunk by chunk.
    fn gather(
        &mut self,
        n: usize,
        inputs: Source<'_>,
        target: Option<TensorView<'_>>,
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
                let part = match inputs {
                    Source::Host(values) => Source::Host(&values[range.clone()]),
                    Source::Device(buffer, at) => Source::Device(buffer, at),
                };
                self.upload_pending(
                    part,
                    target.map(|t| &t.data[range.clone()]),
                    count,
                    range.start,
                )?;
                first += count;
            }
            Ok(())
        })
    }

    /// Runs the kernels over the pending images.
    fn dispatch_pending(&mut self) -> Result<()> {
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
        let pad_count = to_u32(images * self.operand_len, "padded values per chunk")?;
        params.push(GramParams {
            pad_count,
            ..self.base
        });
        self.params.write(&gpu.queue, &params);
        let pad_slot = self.acc.len();
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
            for (s, _) in self.sums.iter().enumerate() {
                for (b, block) in self.blocks.iter().enumerate() {
                    let slice = self.d as u64 * block.cols as u64 * 8;
                    let first = self.cleared_splits as u64 * slice;
                    let bytes = (splits - self.cleared_splits) as u64 * slice;
                    let acc = &self.acc[s * self.blocks.len() + b];
                    encoder.clear_buffer(acc, first, Some(bytes));
                }
            }
            self.cleared_splits = splits;
            self.phases.row_splits = splits;
        }
        {
            // One pass: each dispatch is its own usage scope, so the tile kernels see what
            // `pad_inputs` wrote.
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gram"),
                timestamp_writes: self.timer.writes(Phase::Kernel),
            });
            if !self.pad_groups.is_empty() {
                pass.set_pipeline(&gpu.gram.pad);
                let (x, y) = gpu.grid(pad_count.div_ceil(FLAT_THREADS));
                for group in &self.pad_groups {
                    pass.set_bind_group(0, group, &[self.params.offset(pad_slot)]);
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
            pass.set_pipeline(&self.pipeline);
            let d = self.d as u32;
            let tile = self.config.tile();
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
                        block.cols.div_ceil(tile),
                        row_end.div_ceil(tile),
                        splits,
                    );
                }
            }
        }
        let index = gpu.queue.submit([encoder.finish()]);
        // At most two chunks in flight: the host prepares one while the GPU works on another.
        if let Some(previous) = self.in_flight.replace(index) {
            gpu.wait_for(previous, "accumulating statistics")?;
        }
        self.phases.kernel += start.elapsed().as_secs_f64();
        self.rows += rows;
        Ok(())
    }

    /// Adds the split slices of every (sum, block) into slice 0 (one pass).
    /// `fold_splits` reads the split count from the parameter slots: write them (`slot_params`)
    /// after the last chunk's dispatch.
    fn encode_fold(&mut self, encoder: &mut wgpu::CommandEncoder) {
        if self.cleared_splits <= 1 {
            return;
        }
        let gpu = Arc::clone(&self.gpu);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("fold splits"),
            timestamp_writes: self.timer.writes(Phase::Reduce),
        });
        pass.set_pipeline(&gpu.gram.fold);
        for s in 0..self.sums.len() {
            for (b, block) in self.blocks.iter().enumerate() {
                let slot = s * self.blocks.len() + b;
                pass.set_bind_group(0, &self.bind_groups[slot], &[self.params.offset(slot)]);
                let (x, y) = gpu.grid((self.d as u32 * block.cols).div_ceil(FLAT_THREADS));
                pass.dispatch_workgroups(x, y, 1);
            }
        }
    }

    /// Single-block path: full f32 matrices, `C0` and `(AᵀA)·W` on the device, one readback of
    /// `C0`, `‖AW‖²`'s product and `G`'s diagonal; `G` itself stays on the device
    /// ([`DeviceGram`]).
    fn finish_on_device(&mut self, weight: &[f64], outputs: usize) -> Result<RawGrams> {
        let gpu = Arc::clone(&self.gpu);
        let d = self.d;
        let m = outputs;
        let m32 = to_u32(m, "consumer outputs")?;
        let d32 = d as u32;
        let start = Instant::now();
        let storage = wgpu::BufferUsages::STORAGE;
        let full_bytes = (d * d * 4) as u64;
        // After each full matrix: its diagonal and the non-finite flag (`to_full`).
        let tail_bytes = ((d + 1) * 4) as u64;
        let pair_bytes = (d * m * 8) as u64;
        // Full f32 matrices of every sum.
        let mut fulls = Vec::with_capacity(self.sums.len());
        for _ in &self.sums {
            fulls.push(gpu.buffer(
                "statistics (f32)",
                full_bytes + tail_bytes,
                storage | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            )?);
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
        // Parameters: the per-sum slots as for a chunk, the (unused) padding slot, then the two
        // products (dense, k = D).
        let bk = self.config.bk;
        let mut slots = self.slot_params(0);
        slots.push(self.base);
        let product = GramParams {
            rows: d32,
            out_rows: d32,
            out_cols: m32,
            col0: 0,
            block_cols: m32,
            splits: 1,
            rows_per_split: d32.next_multiple_of(bk),
            symmetric: 0,
            half_inputs: 0,
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
                    Some((&fulls[s], full_bytes + tail_bytes)),
                )
            })
            .collect();
        // C0 = X·W: the cross sum (AᵀB, read row-major as Xᵀ) or G itself; then (AᵀA)·W.
        let x_full = if with_target { &fulls[1] } else { &fulls[0] };
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
                &fulls[2],
                &w_buffer,
                (full_bytes, w_bytes),
                &product_acc[1],
                pair_bytes,
                None,
            ));
        }

        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("statistics finish"),
            });
        for acc in &product_acc {
            encoder.clear_buffer(acc, 0, None);
        }
        for full in &fulls {
            encoder.clear_buffer(full, full_bytes, Some(tail_bytes));
        }
        self.encode_fold(&mut encoder);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("full matrices"),
                timestamp_writes: self.timer.writes(Phase::Reduce),
            });
            pass.set_pipeline(&gpu.gram.to_full);
            for (s, group) in full_groups.iter().enumerate() {
                pass.set_bind_group(0, group, &[self.params.offset(s)]);
                let (x, y) = gpu.grid((d32 * d32).div_ceil(FLAT_THREADS));
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        {
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
        }
        // One readback: G's diagonal and flag, the product pairs, the timestamps.
        let timestamps = self.timer.resolve(&gpu, &mut encoder)?;
        let stamp_bytes = timestamps.as_ref().map_or(0, |_| self.timer.bytes());
        let total_bytes = tail_bytes + products as u64 * pair_bytes + stamp_bytes;
        let staging = gpu.buffer(
            "statistics readback",
            total_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        encoder.copy_buffer_to_buffer(&fulls[0], full_bytes, &staging, 0, tail_bytes);
        for (p, acc) in product_acc.iter().enumerate() {
            let at = tail_bytes + p as u64 * pair_bytes;
            encoder.copy_buffer_to_buffer(acc, 0, &staging, at, pair_bytes);
        }
        if let Some(t) = &timestamps {
            let at = tail_bytes + products as u64 * pair_bytes;
            encoder.copy_buffer_to_buffer(t, 0, &staging, at, stamp_bytes);
        }
        self.phases.reduce += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut mapped_at = start;
        // Converted straight from the mapped memory, in parallel: the C0 pairs to f64, the
        // timestamps to u64 (no intermediate copy of the readback).
        // The f64 results are allocated and their pages touched while the GPU still works, so
        // that the conversion after the readback is pure arithmetic (no page faults).
        let prefault = |len: usize| {
            let mut v = vec![0.0f64; len];
            // black_box: the store must not be dropped as a no-op on zeroed memory.
            v.par_chunks_mut(512)
                .for_each(|c| c[0] = std::hint::black_box(0.0));
            v
        };
        let (stamps, tail, c0, product1) = gpu.submit_and_map(
            encoder,
            &staging,
            total_bytes,
            "reading back the statistics",
            || {
                let product1 = if with_target {
                    prefault(d * m)
                } else {
                    Vec::new()
                };
                (prefault(d * m), product1)
            },
            |view, (mut c0, mut product1)| {
                mapped_at = Instant::now();
                let words: &[u32] = bytemuck::cast_slice(view);
                let (tail, rest) = words.split_at(d + 1);
                let pairs = |p: usize, out: &mut Vec<f64>| {
                    out.par_chunks_mut(1 << 12)
                        .zip(rest[p * 2 * d * m..(p + 1) * 2 * d * m].par_chunks(2 << 12))
                        .for_each(|(dst, src)| {
                            for (t, w) in dst.iter_mut().zip(src.chunks_exact(2)) {
                                *t = f32::from_bits(w[0]) as f64 + f32::from_bits(w[1]) as f64;
                            }
                        });
                };
                pairs(0, &mut c0);
                if with_target {
                    pairs(1, &mut product1);
                }
                let stamps = rest[products * 2 * d * m..].to_vec();
                (stamps, tail.to_vec(), c0, product1)
            },
        )?;
        let product1 = with_target.then_some(product1);
        self.phases.readback += (mapped_at - start).as_secs_f64();
        let start = mapped_at;
        // Partial sums over fixed chunks, added in order: the same result on every run.
        let dot = |a: &[f64]| -> f64 {
            let parts: Vec<f64> = a
                .par_chunks(1 << 14)
                .zip(weight.par_chunks(1 << 14))
                .map(|(x, w)| x.iter().zip(w).map(|(x, y)| x * y).sum::<f64>())
                .collect();
            parts.iter().sum()
        };
        let total = dot(product1.as_deref().unwrap_or(&c0));
        if timestamps.is_some() {
            self.use_timestamps(&stamps);
        }
        let diag = tail[..d]
            .iter()
            .map(|&w| f32::from_bits(w) as f64)
            .collect();
        let finite = f32::from_bits(tail[d]) == 0.0;
        let matrix = DeviceGram {
            gpu: Arc::clone(&gpu),
            buffer: fulls.swap_remove(0),
            dim: d,
        };
        let gram = Gram::on_device(d, diag, Arc::new(matrix), finite);
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
    fn finish_blocks(&mut self) -> Result<RawGrams> {
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
        let mut totals: Vec<Vec<f64>> = self.sums.iter().map(|_| vec![0.0; d * d]).collect();
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
    fn use_timestamps(&mut self, words: &[u32]) {
        let (kernel, reduce) = self.timer.seconds(&self.gpu, words);
        if self.timer.complete() {
            self.phases.kernel = kernel;
            self.phases.reduce = reduce;
            self.phases.clock = KernelClock::Timestamps;
        }
    }

    fn empty(&self) -> RawGrams {
        let d = self.d;
        let zeros = || vec![0.0; d * d];
        let with_target = self.sums.len() > 1;
        RawGrams {
            gram: zeros().into(),
            cross: with_target.then(zeros),
            target_gram: with_target.then(zeros),
            rows: 0,
            c0: None,
            total: None,
            phases: self.phases,
        }
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
        self.gather(n, Source::Host(inputs.data), target)
    }

    fn add_device_batch(
        &mut self,
        inputs: DeviceTensor<'_>,
        target: Option<TensorView<'_>>,
    ) -> Result<()> {
        if self.half_inputs || !Arc::ptr_eq(&inputs.backend().gpu, &self.gpu) {
            let host = inputs.read()?;
            return self.add_batch(host.view(), target);
        }
        let n = check_stats_shapes(
            &self.unfolding,
            self.sums.len() > 1,
            inputs.shape(),
            target.as_ref(),
        )?;
        self.gather(n, Source::Device(inputs.buffer(), inputs.offset()), target)
    }

    fn finish(mut self: Box<Self>) -> Result<RawGrams> {
        self.dispatch_pending()?;
        if self.rows == 0 {
            return Ok(self.empty());
        }
        let gpu = Arc::clone(&self.gpu);
        gpu.scoped("reading back the statistics", || self.finish_blocks())
    }

    fn finish_with_weight(mut self: Box<Self>, weight: &[f64], outputs: usize) -> Result<RawGrams> {
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
