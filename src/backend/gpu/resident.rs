//! Statistics left on the device: the Gram matrix `G` (f32, `D × D`, both triangles) and
//! `C0` (f32, `D × m`) that the statistics finished on the GPU, kept there for the GPU greedy
//! (copied buffer to buffer) and read back only as far as the host asks
//! ([`crate::layer::StatsMatrix`]).

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, PooledBuffer};
use crate::layer::stats::DeviceMatrix;

/// A statistics matrix on the device: `rows × cols` f32, row-major, from the start of `buffer`.
pub(crate) struct DeviceRows {
    pub(super) gpu: Arc<Gpu>,
    pub(super) buffer: PooledBuffer,
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// What the matrix is, for messages (e.g. `the Gram matrix`).
    pub(super) name: &'static str,
}

impl DeviceRows {
    /// This matrix, if it is on `gpu` and `rows × cols`.
    pub(super) fn of<'a>(
        matrix: Option<&'a dyn DeviceMatrix>,
        gpu: &Arc<Gpu>,
        rows: usize,
        cols: usize,
    ) -> Option<&'a Self> {
        matrix
            .and_then(|m| m.as_any().downcast_ref::<Self>())
            .filter(|m| Arc::ptr_eq(&m.gpu, gpu) && (m.rows, m.cols) == (rows, cols))
    }

    /// Encodes copies of rows `rows` (in order) into `dst` from byte `at` on, one copy per run of
    /// consecutive rows. Returns the bytes copied.
    pub(super) fn encode_rows(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        rows: &[usize],
        dst: &wgpu::Buffer,
        at: u64,
    ) -> u64 {
        let row_bytes = (self.cols * 4) as u64;
        let mut written = 0;
        let mut i = 0;
        while i < rows.len() {
            let mut j = i + 1;
            while j < rows.len() && rows[j] == rows[j - 1] + 1 {
                j += 1;
            }
            let bytes = (j - i) as u64 * row_bytes;
            encoder.copy_buffer_to_buffer(
                &self.buffer,
                rows[i] as u64 * row_bytes,
                dst,
                at + written,
                bytes,
            );
            written += bytes;
            i = j;
        }
        written
    }
}

impl DeviceMatrix for DeviceRows {
    fn read_rows(&self, rows: &[usize]) -> Result<Vec<f64>> {
        let (n, d) = (self.rows, self.cols);
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::InvalidArgument(format!(
                "row {bad} of {} is out of range ({n} rows)",
                self.name
            )));
        }
        let bytes = (rows.len() * d * 4) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let gpu = &self.gpu;
        let what = format!("reading back {}", self.name);
        gpu.scoped(&what, || {
            let staging = gpu.buffer(
                "statistics readback",
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?;
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("statistics readback"),
                });
            self.encode_rows(&mut encoder, rows, &staging, 0);
            gpu.submit_and_map(
                encoder,
                &staging,
                bytes,
                &what,
                || vec![0.0f64; rows.len() * d],
                |view, mut out| {
                    let words: &[f32] = bytemuck::cast_slice(view);
                    out.par_chunks_mut(d.max(1))
                        .zip(words.par_chunks(d.max(1)))
                        .for_each(|(dst, src)| {
                            for (t, &w) in dst.iter_mut().zip(src) {
                                *t = w as f64;
                            }
                        });
                    out
                },
            )
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
