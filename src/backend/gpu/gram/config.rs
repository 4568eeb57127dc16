//! The tile configuration of the statistics kernels and their parameter block: what the host
//! and `shaders/gram.wgsl` agree on.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};

/// Threads per workgroup of `fold_splits` and `to_full` (`FLAT_THREADS` in gram.wgsl).
pub(super) const FLAT_THREADS: u32 = 256;
/// Most values one thread stages per operand and step (`MAX_LOADS` in gram.wgsl).
const MAX_LOADS: u32 = 16;
/// Rows folded at a time (`FOLD_ROWS` in gram.wgsl); every `bk` divides it.
const FOLD_ROWS: u32 = 4096;

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

/// `GramParams` of gram.wgsl (field for field; `tests/gram_statistics.rs` checks the layout with naga).
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
    /// Always 0: keeps the driver from simplifying the compensated sums away (see gram.wgsl).
    pub zero: u32,
}
