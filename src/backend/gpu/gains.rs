//! Scoring kernels of the greedy (`shaders/gains.wgsl`): every channel's marginal gain in one
//! dispatch per row block, the argmax by the host's rule, and the picked channel's diagonal block,
//! all written into one small report buffer that the host reads back once per step.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{bind_group_layout, pipelines, Slot};

/// Largest column group factored in workgroup memory (must match `KS_SHARED` in gains.wgsl);
/// larger groups use a scratch buffer in device memory.
pub(super) const KS_SHARED: usize = 56;

/// The compiled `gains.wgsl` kernels. Bind group: params, schur, resid, solved, factor,
/// gram_diag, selected, report (see the shader for layouts).
pub(super) struct GainsKernels {
    pub(super) layout: wgpu::BindGroupLayout,
    pub(super) gains: wgpu::ComputePipeline,
    pub(super) pick: wgpu::ComputePipeline,
    pub(super) copy_block: wgpu::ComputePipeline,
}

impl GainsKernels {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = bind_group_layout(
            device,
            "gains",
            &[
                Slot::Params,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
            ],
        );
        let [gains, pick, copy_block] = pipelines(
            device,
            "gains.wgsl",
            include_str!("../../../shaders/gains.wgsl"),
            &layout,
            ["gains", "pick", "copy_block"],
        );
        Self {
            layout,
            gains,
            pick,
            copy_block,
        }
    }
}

/// `GainsParams` of gains.wgsl (field for field): one row block of the greedy state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(super) struct GainsParams {
    pub chan0: u32,
    pub channels: u32,
    pub ks: u32,
    pub d_cols: u32,
    pub m: u32,
    pub total_channels: u32,
    pub tol: f32,
    pub _pad: u32,
}
