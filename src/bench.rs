//! Benchmark workloads shared by `subprune bench` and the criterion benches: layer sizes taken
//! from the networks of the paper (and ResNet-50), timed the same way on every backend.

use std::time::Instant;

use crate::backend::gpu::DeviceTensor;
use crate::backend::{Backend, StatsSpec};
use crate::error::{Error, Result};
use crate::layer::{ConvOptions, LayerProblem, LayerStats};
use crate::linalg::gemm::{gemm, MatMut, MatRef, Par};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::GpuBackend;

/// A benchmark layer: a 3×3, stride-1, padding-1 conv consumer reading `channels` maps of
/// `spatial × spatial` from `images` images, with `outputs` output channels.
#[derive(Clone, Copy, Debug)]
pub struct LayerCase {
    /// Short name (used on the command line).
    pub name: &'static str,
    /// Channels `d` of the pruned layer.
    pub channels: usize,
    /// Feature-map side.
    pub spatial: usize,
    /// Calibration images.
    pub images: usize,
    /// Consumer outputs `m`.
    pub outputs: usize,
}

/// The benchmark layers: ResNet-56 (d=64, ks=9, N·L=32768, m=64), VGG-11 (d=512, ks=9,
/// N·L=8192, m=512) and ResNet-50 (d=512, ks=9, N·L=25088, m=512).
pub const CASES: [LayerCase; 3] = [
    LayerCase {
        name: "resnet56",
        channels: 64,
        spatial: 8,
        images: 512,
        outputs: 64,
    },
    LayerCase {
        name: "vgg11",
        channels: 512,
        spatial: 4,
        images: 512,
        outputs: 512,
    },
    LayerCase {
        name: "resnet50",
        channels: 512,
        spatial: 7,
        images: 512,
        outputs: 512,
    },
];

impl LayerCase {
    /// Looks a case up by name, or parses a custom one written `C,S,N,M`: `C` channels of
    /// `S × S` maps, `N` images, `M` consumer outputs (e.g. `16,32,512,16`, a ResNet-56 stage-1
    /// layer).
    pub fn by_name(name: &str) -> Option<LayerCase> {
        if let Some(case) = CASES.iter().copied().find(|c| c.name == name) {
            return Some(case);
        }
        let v: Vec<usize> = name
            .split(',')
            .map(|x| x.trim().parse().ok().filter(|&x| x > 0))
            .collect::<Option<_>>()?;
        let [channels, spatial, images, outputs] = v[..] else {
            return None;
        };
        Some(LayerCase {
            name: "custom",
            channels,
            spatial,
            images,
            outputs,
        })
    }

    /// Unfolded rows `N·L`.
    pub fn rows(&self) -> usize {
        self.images * self.spatial * self.spatial
    }

    /// Unfolded columns `D = d·9`.
    pub fn columns(&self) -> usize {
        self.channels * 9
    }

    /// Floating-point operations of the statistics counted as the GEMM `BᵀB` of the same shape
    /// would: `2·N·L·D²` (what an sgemm of that shape is credited with).
    pub fn stats_flops(&self) -> f64 {
        2.0 * self.rows() as f64 * (self.columns() as f64).powi(2)
    }

    /// Bytes a run of this case holds at its peak, planned before any allocation with checked
    /// arithmetic: the inputs and weight (f32), the sgemm reference's `B` and `BᵀB` (f32), and the
    /// statistics and greedy state. An error names the size that overflows.
    pub fn memory_bytes(&self) -> Result<u64> {
        let too_large = |what: &str| {
            Error::InvalidArgument(format!(
                "bench case {} ({} channels of {}×{}, {} images, {} outputs): {what} overflows",
                self.name, self.channels, self.spatial, self.spatial, self.images, self.outputs
            ))
        };
        let product = |dims: &[usize], what: &str| -> Result<u64> {
            dims.iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .filter(|&n| n <= crate::ir::shape::MAX_ELEMENTS as u64)
                .ok_or_else(|| too_large(what))
        };
        let s = self.spatial;
        let inputs = product(&[self.images, self.channels, s, s], "the input tensor")?;
        let weight = product(&[self.outputs, self.channels, 9], "the weight")?;
        let rows = product(&[self.images, s, s], "the unfolded rows")?;
        let columns = product(&[self.channels, 9], "the unfolded columns")?;
        let sgemm = product(&[rows as usize, columns as usize], "the sgemm reference")?
            .checked_add(product(
                &[columns as usize, columns as usize],
                "the sgemm output",
            )?)
            .ok_or_else(|| too_large("the sgemm reference"))?;
        // The Gram statistics and the greedy's Schur complements: 24 bytes per D² entry at the
        // peak (as `CostPlan` counts the Gram form), plus O(D·m) vectors.
        let greedy = columns
            .checked_mul(columns)
            .and_then(|dd| dd.checked_mul(24))
            .and_then(|g| g.checked_add(columns.checked_mul(self.outputs as u64)?.checked_mul(32)?))
            .ok_or_else(|| too_large("the greedy state"))?;
        (inputs + weight)
            .checked_add(sgemm)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(greedy))
            .ok_or_else(|| too_large("the memory"))
    }

    /// Fails with [`Error::Memory`] when [`LayerCase::memory_bytes`] exceeds `limit`, or without
    /// one the memory available to this process; returns the planned bytes.
    pub fn check_memory(&self, limit: Option<u64>) -> Result<u64> {
        let needed = self.memory_bytes()?;
        let (available, note) = match limit {
            Some(l) => (l, " (the memory limit given)"),
            None => match crate::units::available_memory() {
                Some(a) => (a, " (free memory of this machine or process)"),
                None => return Ok(needed),
            },
        };
        if needed > available {
            return Err(Error::Memory {
                what: format!(
                    "bench case {} ({} channels of {}×{}, {} images, {} outputs)",
                    self.name, self.channels, self.spatial, self.spatial, self.images, self.outputs
                ),
                needed,
                available,
                source_note: format!("{note}; a smaller case"),
            });
        }
        Ok(needed)
    }

    /// Random (rectified Gaussian) consumer inputs and weights, and the layer problem.
    pub fn instance(&self, seed: u64) -> Result<(LayerProblem, Tensor)> {
        self.memory_bytes()?;
        let mut rng = Rng::new(seed);
        let s = self.spatial;
        let inputs = Tensor::new(
            vec![self.images, self.channels, s, s],
            rng.normal_vec(self.images * self.channels * s * s)
                .into_iter()
                .map(|v| v.max(0.0))
                .collect(),
        )?;
        let weight = Tensor::new(
            vec![self.outputs, self.channels, 3, 3],
            rng.normal_vec(self.outputs * self.channels * 9),
        )?;
        let conv = ConvOptions {
            padding: [1, 1],
            ..ConvOptions::default()
        };
        Ok((
            LayerProblem::new(&inputs.shape, weight.view(), Some(conv))?,
            inputs,
        ))
    }
}

/// Seconds to compute the statistics of `inputs` (one call of [`crate::layer_stats`]).
pub fn time_stats(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inputs: &Tensor,
) -> Result<(f64, LayerStats)> {
    time_layer_stats(backend, problem, inputs, None)
}

/// Seconds of one call of [`crate::layer_stats`], with or without a target.
fn time_layer_stats(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inputs: &Tensor,
    target: Option<&Tensor>,
) -> Result<(f64, LayerStats)> {
    let start = Instant::now();
    let stats = crate::layer_stats(
        backend,
        problem,
        inputs.view(),
        target.map(|t| t.view()),
        crate::DEFAULT_BATCH_IMAGES,
    )?;
    Ok((start.elapsed().as_secs_f64(), stats))
}

/// A target `A` for the asymmetric statistics of `inputs`: the inputs with seeded Gaussian noise
/// of a tenth of their spread added (a pruned network's activations differ from the original's
/// by about that much), rectified like them.
pub fn asym_target(seed: u64, inputs: &Tensor) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let noise = rng.normal_vec(inputs.data.len());
    let data = inputs
        .data
        .iter()
        .zip(noise)
        .map(|(&x, e)| (x + 0.1 * e).max(0.0))
        .collect();
    Tensor::new(inputs.shape.clone(), data)
}

/// Seconds to compute the asymmetric statistics of `inputs` against `target` (one call of
/// [`crate::layer_stats`] with the target: `C0 = Bᵀ(A·W)` and `‖AW‖²` next to `BᵀB`). The
/// phases of the result hold the kernel time and the multiply-adds
/// ([`crate::layer::StatsPhases::multiply_adds`]).
pub fn time_asym_stats(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inputs: &Tensor,
    target: &Tensor,
) -> Result<(f64, LayerStats)> {
    time_layer_stats(backend, problem, inputs, Some(target))
}

/// Consumer inputs held on a GPU backend's device, as the GPU executor's taps hand activations
/// to the statistics during `prune --backend gpu`: uploaded once, so that
/// [`time_stats_resident`] times the statistics without the host → device copy (what a GEMM
/// library's timing of the same product leaves out too).
pub struct ResidentInputs {
    buffer: crate::gpu::PooledBuffer,
    shape: Vec<usize>,
}

impl ResidentInputs {
    /// Uploads `inputs` to `gpu`'s device (a refused allocation is an [`crate::Error::Gpu`]).
    pub fn new(gpu: &GpuBackend, inputs: &Tensor) -> Result<Self> {
        let buffer = gpu.gpu.buffer(
            "bench inputs",
            (inputs.data.len() * 4).max(4) as u64,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        )?;
        gpu.gpu
            .queue
            .write_buffer(&buffer, 0, bytemuck::cast_slice(&inputs.data));
        Ok(Self {
            buffer,
            shape: inputs.shape.clone(),
        })
    }
}

/// Seconds to compute the statistics of inputs already on the device (one accumulator, fed in
/// batches of [`crate::DEFAULT_BATCH_IMAGES`] device tensors, finished with the consumer weight:
/// what `prune --backend gpu` does per layer).
pub fn time_stats_resident(
    gpu: &GpuBackend,
    problem: &LayerProblem,
    inputs: &ResidentInputs,
) -> Result<(f64, LayerStats)> {
    let start = Instant::now();
    let spec =
        StatsSpec::new(problem.unfolding, false).with_weight(&problem.weight, problem.outputs);
    let mut acc = gpu.stats_accumulator(spec)?;
    let images = inputs.shape[0];
    let per_image: usize = inputs.shape[1..].iter().product();
    let mut first = 0;
    while first < images {
        let count = crate::DEFAULT_BATCH_IMAGES.min(images - first);
        let mut shape = inputs.shape.clone();
        shape[0] = count;
        let at = (first * per_image * 4) as u64;
        acc.add_device_batch(DeviceTensor::new(&inputs.buffer, &shape, at, gpu), None)?;
        first += count;
    }
    let raw = acc.finish_with_weight(&problem.weight, problem.outputs)?;
    let stats = LayerStats::from_raw(problem, raw)?;
    Ok((start.elapsed().as_secs_f64(), stats))
}

/// The part of a statistics time that does not grow with the number of images, from the times
/// of `n` and of `n / 2` images under the linear model `t(n) = fixed + rate·n`:
/// `2·t(n/2) − t(n)`. Timing noise makes it approximate (it can come out below 0).
pub fn fixed_cost(full: f64, half: f64) -> f64 {
    2.0 * half - full
}

/// Seconds for a full greedy run (all `d` steps) on `stats`.
pub fn time_greedy(backend: &dyn Backend, stats: &LayerStats) -> Result<f64> {
    let start = Instant::now();
    crate::run_greedy(
        backend,
        stats,
        crate::DEFAULT_DEPENDENCE_TOL,
        &mut |_, _, _| {},
    )?;
    Ok(start.elapsed().as_secs_f64())
}

/// The CPU reference the statistics are measured against: one multi-threaded sgemm `Bᵀ B` with
/// `B` of `rows × cols` (the `gemm` crate, a BLIS-style tuned kernel), on preallocated buffers.
pub struct SgemmReference {
    rows: usize,
    cols: usize,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl SgemmReference {
    /// Random `B` and an output buffer.
    pub fn new(rows: usize, cols: usize) -> Self {
        let mut rng = Rng::new(7);
        Self {
            rows,
            cols,
            b: rng.normal_vec(rows * cols),
            c: vec![0.0; cols * cols],
        }
    }

    /// One product.
    pub fn run(&mut self) -> Result<()> {
        let b = MatRef::row_major(&self.b, self.rows, self.cols)?;
        gemm(
            MatMut::row_major(&mut self.c, self.cols, self.cols)?,
            false,
            b.t(),
            b,
            1.0,
            Par::all(),
        )
    }

    /// Seconds of the best of `reps` products, after a warm-up.
    pub fn time(&mut self, reps: usize) -> Result<f64> {
        self.run()?;
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let start = Instant::now();
            self.run()?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best)
    }
}

/// One end-to-end pruning run of a whole network, timed.
#[derive(Clone, Debug)]
pub struct NetworkTiming {
    /// Wall-clock seconds of the whole run (forward passes, statistics, greedy, reweighting,
    /// IR edits).
    pub seconds: f64,
    /// The pipeline's own phase times.
    pub phases: crate::prune::Phases,
    /// Layers pruned.
    pub layers: usize,
    /// Parameters before and after.
    pub parameters: (usize, usize),
}

/// Seeded standard-normal images of `shape` (per image), `(images, …shape)`: calibration data
/// for a synthetic network, as a normalised image set looks to its first conv.
pub fn random_images(
    seed: u64,
    images: usize,
    shape: &[usize],
) -> Result<crate::exec::run::F32Images> {
    let mut dims = vec![images];
    dims.extend_from_slice(shape);
    // Planned before the allocation: an impossible or too large count is an error, not an abort.
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= crate::ir::shape::MAX_ELEMENTS)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{images} random images of shape {shape:?}: the value count overflows"
            ))
        })?;
    let needed = count as u64 * 4;
    if let Some(available) = crate::units::available_memory().filter(|&a| needed > a) {
        return Err(Error::Memory {
            what: format!("{images} random images of shape {shape:?}"),
            needed,
            available,
            source_note: " (free memory of this machine or process); fewer --images".into(),
        });
    }
    let mut rng = Rng::new(seed);
    let tensor = Tensor::new(dims, rng.normal_vec(count))?;
    crate::exec::run::F32Images::new("random images", tensor)
}

/// Prunes `model` end to end with `options` on `backend` and the executors `executor` builds,
/// and reports the time.
pub fn time_prune(
    model: &crate::onnx::OnnxModel,
    calib: &dyn crate::exec::run::ImageSource,
    options: &crate::prune::PruneOptions,
    backend: &dyn Backend,
    executor: crate::prune::ExecutorFactory<'_>,
    progress: &mut dyn FnMut(crate::prune::Event<'_>),
) -> Result<NetworkTiming> {
    let start = Instant::now();
    let pruned = crate::prune::prune_with(model, calib, options, backend, executor, progress)?;
    let seconds = start.elapsed().as_secs_f64();
    let report = &pruned.report;
    Ok(NetworkTiming {
        seconds,
        phases: report.phases,
        layers: report.layers.len(),
        parameters: (
            model.graph.parameter_count(),
            pruned.model.graph.parameter_count(),
        ),
    })
}
