//! The pad pass (`shaders/pad.wgsl`): writes a batch of images as the f32 operand the tiled
//! kernels read, every plane framed by the conv's zero padding and f16 uploads widened. One
//! kernel and one parameter block serve the statistics (`backend::gpu`) and the forward
//! convolution (`exec::gpu`).

use bytemuck::{Pod, Zeroable};

use super::pipelines::{bind_group_layout, module_pipelines, shader_module, Slot};

/// Threads per workgroup of the pad pass (`THREADS` in pad.wgsl).
pub(crate) const PAD_THREADS: u32 = 256;

/// `PadParams` of pad.wgsl (field for field; `tests/exec_gpu.rs` checks the layout with naga).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PadParams {
    /// Values per padded image (`C·Hp·Wp`).
    pub padded_len: u32,
    /// Values per padded plane (`Hp·Wp`).
    pub padded_plane: u32,
    /// Values per padded row (`Wp`).
    pub padded_width: u32,
    /// Zero rows above each plane.
    pub top: u32,
    /// Zero columns left of each plane.
    pub left: u32,
    /// Unpadded plane height.
    pub height: u32,
    /// Unpadded plane width.
    pub width: u32,
    /// Values per unpadded image (`C·H·W`).
    pub raw_len: u32,
    /// Values to write (images · `padded_len`).
    pub count: u32,
    /// 1: the source holds f16 values packed two per u32 (low half first); 0: f32.
    pub half_inputs: u32,
}

/// The geometry of one framed image: `channels` planes of `height × width` values placed at row
/// `top`, column `left` of `padded_height × padded_width` planes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PadFrame {
    pub(crate) channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) padded_height: usize,
    pub(crate) padded_width: usize,
    pub(crate) top: usize,
    pub(crate) left: usize,
}

impl PadFrame {
    /// Values per padded image.
    pub(crate) fn padded_len(&self) -> usize {
        self.channels * self.padded_height * self.padded_width
    }

    /// The parameters that pad `images` images (`half`: f16 source values), or the name and
    /// value of the first size beyond the kernel's u32 indexing.
    pub(crate) fn params(
        &self,
        images: usize,
        half: bool,
    ) -> Result<PadParams, (&'static str, usize)> {
        let u = |v: usize, what: &'static str| u32::try_from(v).map_err(|_| (what, v));
        let plane = self.padded_height * self.padded_width;
        Ok(PadParams {
            padded_len: u(self.padded_len(), "values per padded image")?,
            padded_plane: u(plane, "padded plane")?,
            padded_width: u(self.padded_width, "padded width")?,
            top: u(self.top, "padding")?,
            left: u(self.left, "padding")?,
            height: u(self.height, "input height")?,
            width: u(self.width, "input width")?,
            raw_len: u(self.channels * self.height * self.width, "values per image")?,
            count: u(images * self.padded_len(), "padded values")?,
            half_inputs: half as u32,
        })
    }
}

/// The compiled pad pass. Bind group: params, source (unpadded batch), padded (output).
pub(crate) struct PadKernel {
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) pipeline: wgpu::ComputePipeline,
}

impl PadKernel {
    /// Compiles the pass, with wgpu's runtime bounds checks unless `checked` is false.
    pub(crate) fn new(device: &wgpu::Device, checked: bool) -> Self {
        let layout = bind_group_layout(device, "pad", &[Slot::Params, Slot::Read, Slot::ReadWrite]);
        let module = shader_module(device, "pad.wgsl", super::shaders::PAD, checked);
        let [pipeline] = module_pipelines(device, "pad.wgsl", &module, &layout, ["pad_planes"]);
        Self { layout, pipeline }
    }

    /// The (x, y) workgroup grid of a pass writing `count` values on `gpu`.
    pub(crate) fn grid(gpu: &super::Gpu, count: u32) -> (u32, u32) {
        gpu.grid(count.div_ceil(PAD_THREADS))
    }
}
