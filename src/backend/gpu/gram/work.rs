//! Work planning of the statistics kernels: row splits (split-K slices) and column blocks of
//! the result, chunk sizes of the uploaded inputs, and the parameters of each dispatch.

use super::config::GramParams;
use super::{GpuStats, Sum};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::layer::Unfolding;

/// Most row splits (accumulator slices) per sum.
const MAX_SPLITS: u32 = 64;
/// Most bytes spent on extra accumulator slices for row splits, over all sums.
const SPLIT_MEMORY_BUDGET: u64 = 512 << 20;
/// Largest input chunk uploaded at once, in bytes.
pub(super) const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// Default of [`GpuBackend::with_gather_bytes`](crate::backend::gpu::GpuBackend::with_gather_bytes): batches
/// are gathered on the device up to this many bytes of inputs before the kernels run
/// over all of them: small batches (a forward pass hands over 64 or 128 images at a time) would
/// otherwise give each row split too few rows, and the per-dispatch folds would cost as much as
/// the products.
pub(crate) const GATHER_BYTES: u64 = 64 << 20;
/// Fewest unfolded rows per row split in one dispatch (fewer splits when a chunk is small): a
/// split ends with a fold of its whole tile into the accumulator, which costs about as much as
/// a few hundred rows of products.
const MIN_SPLIT_ROWS: u32 = 1024;

/// Output columns `col0 .. col0 + cols` of every sum, in one buffer per sum.
#[derive(Clone, Copy, Debug)]
pub(super) struct ColumnBlock {
    pub(super) col0: u32,
    pub(super) cols: u32,
}

/// `v` as a u32 index, or an error naming `what`.
pub(super) fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| too_large(what, v))
}

/// The error of a size `what = v` beyond the kernels' u32 indexing.
pub(super) fn too_large(what: &str, v: usize) -> Error {
    Error::Gpu(format!(
        "{what} = {v} exceeds the GPU kernels' u32 indexing"
    ))
}

/// Workgroups that keep the adapter busy: wgpu does not report compute units, so by device type
/// (a large discrete GPU has ~100+ multiprocessors, each taking a few workgroups).
pub(super) fn target_workgroups(gpu: &Gpu) -> u32 {
    match gpu.info.device_type {
        wgpu::DeviceType::DiscreteGpu => 1024,
        wgpu::DeviceType::IntegratedGpu => 128,
        wgpu::DeviceType::Cpu => 4 * rayon::current_num_threads() as u32,
        wgpu::DeviceType::VirtualGpu | wgpu::DeviceType::Other => 256,
    }
}

/// Split count and column blocks of a `d × d` result held as `sums` accumulators of (hi, lo)
/// pairs: enough workgroups for the adapter, within the memory budget and one binding per block.
pub(super) fn plan_work(
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
pub(super) fn upload_bytes(unfolding: &Unfolding, half_inputs: bool) -> usize {
    unfolding.image_len() * if half_inputs { 2 } else { 4 }
}

/// Bytes one image takes in the larger of its device buffers: the uploaded one and, when
/// `padded`, the f32 operand of `operand_len` values the pad pass writes.
pub(super) fn device_image_bytes(
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
    /// Parameters of the (sum, block) dispatches for a chunk of `rows` unfolded rows.
    pub(super) fn slot_params(&self, rows: u32) -> Vec<GramParams> {
        let bk = self.config.bk;
        let splits = self.splits.min(rows.div_ceil(MIN_SPLIT_ROWS)).max(1);
        let rows_per_split = rows.div_ceil(splits).next_multiple_of(bk).max(bk);
        // What `fold_splits` adds up: the slices the kernels have written so far.
        let folded = self.cleared_splits.max(1);
        let m = self.outputs();
        let mut params = Vec::with_capacity(self.acc.len() + 4);
        for slot in &self.slots {
            {
                let shared = GramParams {
                    rows,
                    rows_per_split,
                    out_rows: slot.rows,
                    col0: slot.block.col0,
                    block_cols: slot.block.cols,
                    symmetric: slot.sum.symmetric() as u32,
                    splits: folded,
                    ..self.base
                };
                params.push(match slot.sum {
                    // Conv B against the dense rows of P (mode 3), or dense against dense.
                    Sum::Projected => GramParams {
                        out_cols: m,
                        conv: if self.base.conv != 0 { 3 } else { 0 },
                        right_stride: m,
                        ..shared
                    },
                    Sum::ProjectedNorm => GramParams {
                        out_cols: m,
                        conv: 0,
                        left_stride: m,
                        right_stride: m,
                        ..shared
                    },
                    _ => shared,
                });
            }
        }
        params
    }
}
