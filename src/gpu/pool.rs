//! Buffers: a grow-only pool shared by all layers of one backend, bindings, and uniform
//! parameter blocks selected by dynamic offsets.

use std::num::NonZeroU64;
use std::ops::Deref;
use std::sync::Arc;

use super::errors::ErrorScopes;
use super::Gpu;
use crate::error::{Error, Result};

/// Buffers kept in the pool for reuse (beyond this, returned buffers are freed).
const POOL_MAX_BUFFERS: usize = 64;
/// Bytes kept in the pool for reuse.
const POOL_MAX_BYTES: u64 = 1 << 30;

impl Gpu {
    pub(crate) fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<wgpu::Buffer>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer of at least `size` bytes with exactly `usage`, from the pool or newly allocated
    /// (contents undefined when reused). Allocation failures become [`Error::Gpu`].
    pub(crate) fn buffer(
        self: &Arc<Self>,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<PooledBuffer> {
        let size = size.max(16).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        if size > self.limits.max_buffer_size {
            return Err(Error::Gpu(format!(
                "{label} needs {size} bytes, more than the device's largest buffer ({} bytes) on {}",
                self.limits.max_buffer_size, self.info.name
            )));
        }
        {
            let mut pool = self.lock_pool();
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.usage() == usage && b.size() >= size && b.size() <= 2 * size)
                .min_by_key(|(_, b)| b.size())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let buffer = pool.swap_remove(i);
                return Ok(PooledBuffer {
                    buffer: Some(buffer),
                    gpu: Arc::clone(self),
                });
            }
        }
        // Round up a little so that later, slightly bigger requests can reuse the buffer.
        let granule = (size.next_power_of_two() / 8).max(256);
        let alloc = size
            .next_multiple_of(granule)
            .min(self.limits.max_buffer_size.max(size));
        let scope = ErrorScopes::push(&self.device);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: alloc,
            usage,
            mapped_at_creation: false,
        });
        scope.pop(&format!("allocating {label} ({alloc} bytes)"))?;
        Ok(PooledBuffer {
            buffer: Some(buffer),
            gpu: Arc::clone(self),
        })
    }
}

/// A buffer borrowed from the pool; returned to it on drop.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    gpu: Arc<Gpu>,
}

impl Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let mut pool = self.gpu.lock_pool();
            let held: u64 = pool.iter().map(|b| b.size()).sum();
            if pool.len() < POOL_MAX_BUFFERS && held + buffer.size() <= POOL_MAX_BYTES {
                pool.push(buffer);
            }
        }
    }
}

/// A binding of the first `size` bytes of `buffer`.
pub(crate) fn binding(buffer: &wgpu::Buffer, size: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: NonZeroU64::new(size.next_multiple_of(4).max(4)),
    })
}

/// A bind group of `resources` at bindings 0, 1, 2, … in order.
pub(crate) fn bind_group<'a>(
    device: &wgpu::Device,
    label: Option<&str>,
    layout: &wgpu::BindGroupLayout,
    resources: impl IntoIterator<Item = wgpu::BindingResource<'a>>,
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = resources
        .into_iter()
        .enumerate()
        .map(|(i, resource)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource,
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label,
        layout,
        entries: &entries,
    })
}

/// A uniform buffer of parameter blocks, one per dispatch, selected by dynamic offsets.
pub(crate) struct ParamSlots {
    buffer: PooledBuffer,
    stride: u64,
    size: u64,
    pub(crate) count: usize,
}

impl ParamSlots {
    pub(crate) fn new<T: bytemuck::Pod>(gpu: &Arc<Gpu>, label: &str, count: usize) -> Result<Self> {
        let size = std::mem::size_of::<T>() as u64;
        let stride = size.next_multiple_of(gpu.limits.min_uniform_buffer_offset_alignment as u64);
        let buffer = gpu.buffer(
            label,
            stride * count.max(1) as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        Ok(Self {
            buffer,
            stride,
            size,
            count,
        })
    }

    /// The binding (one block) to put in a bind group.
    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        binding(&self.buffer, self.size)
    }

    /// The dynamic offset of slot `i`.
    pub(crate) fn offset(&self, i: usize) -> u32 {
        debug_assert!(i < self.count);
        (i as u64 * self.stride) as u32
    }

    /// Writes all slots (ordered before the next submission).
    pub(crate) fn write<T: bytemuck::Pod>(&self, queue: &wgpu::Queue, slots: &[T]) {
        debug_assert!(slots.len() <= self.count);
        let mut bytes = vec![0u8; self.stride as usize * slots.len()];
        for (i, s) in slots.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + self.size as usize].copy_from_slice(bytemuck::bytes_of(s));
        }
        if !bytes.is_empty() {
            queue.write_buffer(&self.buffer, 0, &bytes);
        }
    }
}
