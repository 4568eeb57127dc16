//! Tensors that live on a GPU device (the forward executor's activations, handed to the
//! statistics without a host copy).

use std::sync::Arc;

use super::{Gpu, PooledBuffer};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A tensor on a GPU device (made with `DeviceTensor::new` on a [`crate::GpuBackend`]), e.g. one the GPU executor hands to a tap consumer
/// ([`crate::exec::Activation::Device`]): row-major f32,
/// batch first, starting `offset` bytes into `buffer`. The buffer stays valid for the duration of
/// the tap call; work the consumer submits to the same queue runs after the tensor is computed.
#[derive(Clone, Copy)]
pub struct DeviceTensor<'a> {
    buffer: &'a wgpu::Buffer,
    shape: &'a [usize],
    offset: u64,
    gpu: &'a Arc<Gpu>,
}

impl std::fmt::Debug for DeviceTensor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTensor")
            .field("shape", &self.shape)
            .field("offset", &self.offset)
            .field("adapter", &self.gpu.info.name)
            .finish()
    }
}

impl<'a> DeviceTensor<'a> {
    /// The tensor of `shape` stored from byte `offset` of `buffer` on `gpu`'s device.
    pub(crate) fn on_gpu(
        buffer: &'a wgpu::Buffer,
        shape: &'a [usize],
        offset: u64,
        gpu: &'a Arc<Gpu>,
    ) -> Self {
        Self {
            buffer,
            shape,
            offset,
            gpu,
        }
    }

    /// The same values under another shape with as many elements (e.g. `(N, C, 1, 1)` read as
    /// `(N, C)`).
    pub fn reshaped<'s>(&self, shape: &'s [usize]) -> Result<DeviceTensor<'s>>
    where
        'a: 's,
    {
        let (from, to) = (
            self.shape.iter().product::<usize>(),
            shape.iter().product::<usize>(),
        );
        if from != to {
            return Err(Error::Shape(format!(
                "a device tensor of shape {:?} cannot be read as {shape:?}",
                self.shape
            )));
        }
        Ok(DeviceTensor {
            buffer: self.buffer,
            shape,
            offset: self.offset,
            gpu: self.gpu,
        })
    }

    /// The buffer holding the tensor (f32 values from [`Self::offset`] on).
    pub fn buffer(&self) -> &'a wgpu::Buffer {
        self.buffer
    }

    /// The tensor's shape, batch first.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// Where the tensor starts in [`Self::buffer`], in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The tensor's size in bytes.
    pub fn byte_len(&self) -> u64 {
        4 * self.shape.iter().product::<usize>() as u64
    }

    /// The device (and queue) the buffer belongs to.
    pub(crate) fn gpu(&self) -> &'a Arc<Gpu> {
        self.gpu
    }

    /// Copies the tensor to host memory (waits for the device).
    pub fn read(&self) -> Result<Tensor> {
        let gpu = self.gpu;
        let bytes = self.byte_len();
        let data = gpu.scoped("reading a tapped activation back", || {
            if bytes == 0 {
                return Ok(Vec::new());
            }
            let staging = gpu.buffer(
                "tap readback",
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?;
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            encoder.copy_buffer_to_buffer(self.buffer, self.offset, &staging, 0, bytes);
            gpu.submit_and_read(encoder, &staging, bytes, "reading a tapped activation")
        })?;
        Tensor::new(self.shape.to_vec(), bytemuck::cast_vec(data))
    }
}

/// A device tensor in a buffer of its own ([`DeviceTensor::copy_on_device`]): kept past the tap
/// call that handed the original over, e.g. the original network's activations that the asym
/// pipeline holds as the targets of a batch while the pruned network runs.
pub struct OwnedDeviceTensor {
    buffer: PooledBuffer,
    shape: Vec<usize>,
    gpu: Arc<Gpu>,
}

impl std::fmt::Debug for OwnedDeviceTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedDeviceTensor")
            .field("shape", &self.shape)
            .field("adapter", &self.gpu.info.name)
            .finish()
    }
}

impl OwnedDeviceTensor {
    /// The tensor, as tap consumers take it.
    pub fn view(&self) -> DeviceTensor<'_> {
        DeviceTensor::on_gpu(&self.buffer, &self.shape, 0, &self.gpu)
    }

    /// `tensor` uploaded to a new buffer on `gpu`'s device.
    pub(crate) fn upload(gpu: &Arc<Gpu>, tensor: crate::tensor::TensorView<'_>) -> Result<Self> {
        let bytes = 4 * tensor.data.len() as u64;
        let buffer = gpu.buffer("uploaded device tensor", bytes.max(4), COPYABLE_STORAGE)?;
        if bytes > 0 {
            gpu.queue
                .write_buffer(&buffer, 0, bytemuck::cast_slice(tensor.data));
        }
        Ok(Self {
            buffer,
            shape: tensor.shape.to_vec(),
            gpu: Arc::clone(gpu),
        })
    }

    /// The tensor's size in bytes.
    pub fn byte_len(&self) -> u64 {
        4 * self.shape.iter().product::<usize>() as u64
    }
}

/// Usage of device tensors' own buffers: bound as storage, copied from and to.
const COPYABLE_STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl DeviceTensor<'_> {
    /// A copy in a new buffer on the same device (queued on the device's queue: no host round
    /// trip, and work submitted after it sees the copy).
    pub fn copy_on_device(&self) -> Result<OwnedDeviceTensor> {
        let gpu = Arc::clone(self.gpu);
        let bytes = self.byte_len();
        let buffer = gpu.buffer("device tensor copy", bytes.max(4), COPYABLE_STORAGE)?;
        if bytes > 0 {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("device tensor copy"),
                });
            encoder.copy_buffer_to_buffer(self.buffer, self.offset, &buffer, 0, bytes);
            gpu.queue.submit([encoder.finish()]);
        }
        Ok(OwnedDeviceTensor {
            buffer,
            shape: self.shape.to_vec(),
            gpu,
        })
    }
}
