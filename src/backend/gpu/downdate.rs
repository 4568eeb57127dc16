//! The rank-`ks` downdate of the greedy state (`shaders/downdate.wgsl`): one tiled kernel
//! `out (−)= A·B` with strided operands, used for `V = E[:,J] L⁻ᵀ`, `Y = L⁻¹ R[J,:]`,
//! `E ← E − V Vᵀ` and `R ← R − V Y`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{bind_group_layout, pipelines, Slot};

/// Output tile edge of `rank_update` (must match `TILE` in downdate.wgsl).
pub(super) const TILE: u32 = 64;

/// Mask bit: skip output rows of selected channels (write 0 when not accumulating).
pub(super) const MASK_ROWS: u32 = 1;
/// Mask bit: skip output columns of selected channels.
pub(super) const MASK_COLS: u32 = 2;

/// The compiled `downdate.wgsl` kernel. Bind group: params, a, b, out, selected.
pub(super) struct DowndateKernels {
    pub(super) layout: wgpu::BindGroupLayout,
    pub(super) rank_update: wgpu::ComputePipeline,
}

impl DowndateKernels {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = bind_group_layout(
            device,
            "downdate",
            &[
                Slot::Params,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::Read,
            ],
        );
        let [rank_update] = pipelines(
            device,
            "downdate.wgsl",
            include_str!("../../../shaders/downdate.wgsl"),
            &layout,
            ["rank_update"],
        );
        Self {
            layout,
            rank_update,
        }
    }
}

/// `UpdateParams` of downdate.wgsl (field for field): one product `out (−)= A·B`, with
/// `A[r][k] = a[a_off + r·a_row + k·a_depth]`, `B[k][c] = b[b_off + k·b_depth + c·b_col]`,
/// `out[r][c] = out[out_off + r·out_row + c]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(super) struct UpdateParams {
    pub rows: u32,
    pub cols: u32,
    pub depth: u32,
    pub a_off: u32,
    pub a_row: u32,
    pub a_depth: u32,
    pub b_off: u32,
    pub b_depth: u32,
    pub b_col: u32,
    pub out_off: u32,
    pub out_row: u32,
    pub accumulate: u32,
    pub ks: u32,
    pub row_chan0: u32,
    pub col_chan0: u32,
    pub mask: u32,
}

impl UpdateParams {
    /// Workgroups of the dispatch: (column tiles, row tiles).
    pub(super) fn groups(&self) -> (u32, u32) {
        (self.cols.div_ceil(TILE), self.rows.div_ceil(TILE))
    }
}
