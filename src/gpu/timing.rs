//! GPU pass timing by timestamp queries, for the statistics' phase breakdown.
//!
//! Each timed compute pass writes a timestamp at its start and end into one query set; at the
//! end of the layer the used queries are resolved once and read back with the results, so timing
//! adds no synchronisation. Without `Features::TIMESTAMP_QUERY`, or once the query set is full,
//! the caller's wall-clock figures are used instead.

use std::sync::Arc;

use super::{Gpu, PooledBuffer};
use crate::error::Result;

/// Timed passes per layer (two queries each); wgpu allows at most 4096 queries per set.
const MAX_PASSES: u32 = 1024;

/// What a timed pass counts towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The Gram kernels.
    Kernel,
    /// Split folds, full matrices, `C0 = X·W`.
    Reduce,
}

pub(crate) struct PassTimer {
    set: Option<wgpu::QuerySet>,
    phases: Vec<Phase>,
    overflowed: bool,
}

impl PassTimer {
    /// A timer on `gpu`; inactive when the device has no timestamp queries.
    pub(crate) fn new(gpu: &Gpu) -> Self {
        let set = gpu
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("statistics pass timer"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * MAX_PASSES,
                })
            });
        Self {
            set,
            phases: Vec::new(),
            overflowed: false,
        }
    }

    /// The timestamp writes for the next pass, counted towards `phase`; `None` when inactive or
    /// full (the timing is then incomplete, and [`PassTimer::complete`] says so).
    pub(crate) fn writes(&mut self, phase: Phase) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let set = self.set.as_ref()?;
        let index = self.phases.len() as u32;
        if index >= MAX_PASSES {
            self.overflowed = true;
            return None;
        }
        self.phases.push(phase);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: set,
            beginning_of_pass_write_index: Some(2 * index),
            end_of_pass_write_index: Some(2 * index + 1),
        })
    }

    /// Whether every pass was timed.
    pub(crate) fn complete(&self) -> bool {
        self.set.is_some() && !self.overflowed
    }

    /// Bytes [`PassTimer::resolve`] writes.
    pub(crate) fn bytes(&self) -> u64 {
        self.phases.len() as u64 * 16
    }

    /// Resolves the used queries into a new buffer (to be copied to a readback buffer).
    pub(crate) fn resolve(
        &self,
        gpu: &Arc<Gpu>,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<Option<PooledBuffer>> {
        let Some(set) = &self.set else {
            return Ok(None);
        };
        if self.phases.is_empty() {
            return Ok(None);
        }
        let buffer = gpu.buffer(
            "timestamps",
            self.bytes(),
            wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        )?;
        encoder.resolve_query_set(set, 0..2 * self.phases.len() as u32, &buffer, 0);
        Ok(Some(buffer))
    }

    /// Seconds per phase from the resolved timestamps (`words`: pairs of u32 halves of u64).
    pub(crate) fn seconds(&self, gpu: &Gpu, words: &[u32]) -> (f64, f64) {
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        let stamp = |i: usize| words[2 * i] as u64 | ((words[2 * i + 1] as u64) << 32);
        let (mut kernel, mut reduce) = (0.0, 0.0);
        for (i, phase) in self.phases.iter().enumerate() {
            let ticks = stamp(2 * i + 1).saturating_sub(stamp(2 * i));
            match phase {
                Phase::Kernel => kernel += ticks as f64 * period,
                Phase::Reduce => reduce += ticks as f64 * period,
            }
        }
        (kernel, reduce)
    }
}
