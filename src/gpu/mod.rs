//! The GPU runtime shared by the statistics backend ([`crate::backend::gpu`]) and the forward
//! executor ([`crate::exec::gpu`]): everything about a wgpu device that is not one of their
//! kernels.
//!
//! * `device.rs`: adapter choice, the device's limits, device creation, and the shared `Gpu`
//!   handle with its submission and readback helpers.
//! * `pool.rs`: the grow-only buffer pool, bindings and bind groups, uniform parameter slots.
//! * `pipelines.rs`: shader modules (checked or unchecked), bind-group layouts, pipelines.
//! * [`shaders`]: the WGSL sources as compiled (the tiled kernels are the matmul core followed
//!   by each kernel's own part).
//! * `pad.rs`: the one pad kernel (`shaders/pad.wgsl`) that frames input planes by their zero
//!   padding (and widens f16 uploads), for the statistics and the forward convolution alike.
//! * `errors.rs`: error scopes and device health: every GPU failure becomes [`Error::Gpu`].
//! * `timing.rs`: pass timing by timestamp queries.
//! * [`DeviceTensor`]: a tensor on the device (an executor's activation handed to the
//!   statistics).
//!
//! Layering: this module uses nothing of `backend` or `exec`; both stand on it.
//!
//! [`Error::Gpu`]: crate::Error::Gpu

mod device;
mod errors;
mod pad;
mod pipelines;
mod pool;
pub mod shaders;
mod tensor;
mod timing;

pub(crate) use device::{adapters, Gpu};
pub(crate) use errors::ErrorScopes;
pub use pad::PadParams;
pub(crate) use pad::{PadFrame, PadKernel};
pub use pipelines::CHECKED_SHADERS_ENV;
pub(crate) use pipelines::{
    bind_group_layout, checked_shaders, pipelines, shader_module, tiled_pipeline, Slot,
};
pub(crate) use pool::{bind_group, binding, ParamSlots, PooledBuffer};
pub use tensor::{DeviceTensor, OwnedDeviceTensor};
pub(crate) use timing::{PassTimer, Phase};
