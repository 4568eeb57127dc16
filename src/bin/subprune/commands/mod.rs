//! One module per subcommand, and what several of them share: opening the backend and the
//! forward executor that --backend names, loading images.

use anyhow::bail;
use subprune::backend::choice::{
    choose_gpu, open_backend_with, BackendChoice, GpuSetup, TileChoice,
};
use subprune::backend::gpu::GpuBackend;
use subprune::{npy, Backend, CpuBackend};

use crate::args::Cli;

pub mod bench;
pub mod compare;
pub mod demo;
pub mod devices;
pub mod eval;
pub mod info;
pub mod prune;
pub mod select;

impl Cli {
    /// The backend --backend names; says on stderr which one is used.
    fn open(&self) -> anyhow::Result<Box<dyn Backend>> {
        if self.backend != BackendChoice::Cpu {
            crate::cleanup::ensure_runtime_dir();
        }
        let opened = open_backend_with(self.backend, &self.gpu_setup())?;
        eprintln!("{}", opened.note);
        if self.f16_inputs && opened.backend.name().starts_with("cpu") {
            eprintln!("note: --f16-inputs applies to the GPU backend only; ignored");
        }
        Ok(opened.backend)
    }

    /// Runs `job` on the backend --backend names. Under `auto`, a GPU failure in the middle of
    /// the work (a lost device, an allocation the device refuses) is reported and the job is run
    /// again on the CPU backend.
    fn run_on_backend<T>(
        &self,
        mut job: impl FnMut(&dyn Backend) -> subprune::Result<T>,
    ) -> anyhow::Result<T> {
        let backend = self.open()?;
        let result = job(backend.as_ref());
        if let Err(e) = &result {
            if let (subprune::Error::Gpu(msg), BackendChoice::Auto) = (e.root(), self.backend) {
                eprintln!("the GPU backend failed ({msg}); falling back to the CPU backend");
                return Ok(job(&CpuBackend::new())?);
            }
        }
        Ok(result?)
    }

    /// The GPU backend on --adapter, with --f16-inputs and its tiles.
    fn gpu(&self) -> subprune::Result<GpuBackend> {
        crate::cleanup::ensure_runtime_dir();
        self.configure(self.gpu_setup().open_device()?)
    }

    /// `gpu` set up as the command line asks (f16 inputs, tiles: autotuned only now, for a
    /// backend that runs), saying so when the tiles were measured now.
    fn configure(&self, gpu: GpuBackend) -> subprune::Result<GpuBackend> {
        let (gpu, report) = self.gpu_setup().configure(gpu)?;
        if let Some(line) = report.as_ref().and_then(|r| r.worth_saying()) {
            eprintln!("{line}");
        }
        Ok(gpu)
    }

    /// The GPU settings of the command line: --adapter, --f16-inputs, --tile, --no-autotune.
    fn gpu_setup(&self) -> GpuSetup {
        let tiles = match (self.tile, self.no_autotune) {
            (Some(config), _) => TileChoice::Fixed(config),
            (None, true) => TileChoice::Default,
            (None, false) => TileChoice::Autotune(subprune::backend::gpu::default_cache_path()),
        };
        GpuSetup {
            adapter: self.adapter.clone(),
            f16_inputs: self.f16_inputs,
            tiles,
        }
    }
}

/// The GPU backend a forward pass runs on, as --backend says: under `auto`, a hardware adapter
/// or the one named, else `None` (the CPU), saying why on stderr.
pub fn forward_gpu(cli: &Cli) -> anyhow::Result<Option<GpuBackend>> {
    if cli.backend != BackendChoice::Cpu {
        crate::cleanup::ensure_runtime_dir();
    }
    let chosen = choose_gpu(cli.backend, &cli.gpu_setup())?;
    if let Some(line) = chosen.tune.as_ref().and_then(|r| r.worth_saying()) {
        eprintln!("{line}");
    }
    if let Some(why) = &chosen.cpu_because {
        eprintln!("backend: cpu (auto, no GPU used: {why})");
    }
    Ok(chosen.gpu)
}

/// The engines of a command that prunes (`prune`, `compare`): the statistics and greedy
/// backend, and the same GPU for the forward passes (tapped activations then go into the
/// statistics on the device), or both on the CPU. Says on stderr which.
pub fn pruning_engines(cli: &Cli) -> anyhow::Result<(Box<dyn Backend>, Option<GpuBackend>)> {
    let gpu = forward_gpu(cli)?;
    let backend: Box<dyn Backend> = match &gpu {
        Some(g) => {
            eprintln!("backend: gpu, {} (executor and statistics)", g.name());
            Box::new(g.clone())
        }
        None => {
            let cpu = CpuBackend::new();
            eprintln!("backend: {}", cpu.name());
            Box::new(cpu)
        }
    };
    Ok((backend, gpu))
}

/// The forward executor --backend names: the GPU executor on the GPU backend (under `auto`, a
/// hardware adapter or the one named), else the CPU executor. Says on stderr which one is used.
pub fn forward_executor(
    cli: &Cli,
    graph: &subprune::ir::Graph,
) -> anyhow::Result<Box<dyn subprune::exec::Executor>> {
    let gpu = forward_gpu(cli)?;
    let exec = subprune::exec::executor_on(gpu.as_ref(), graph)?;
    // Under `auto` without a GPU, forward_gpu has already said why the CPU is used.
    if gpu.is_some() || cli.backend == BackendChoice::Cpu {
        eprintln!("backend: {}", exec.name());
    }
    Ok(exec)
}

/// The first `limit` images of `all` (`--calib-images`), or all of them; a limit of 0 or beyond
/// the file is refused, naming the file.
pub fn first_images<'a>(
    all: &'a dyn subprune::exec::run::ImageSource,
    limit: Option<usize>,
    path: &std::path::Path,
) -> anyhow::Result<subprune::exec::run::FirstImages<'a>> {
    let n = match limit {
        Some(0) => bail!("--calib-images must be ≥ 1"),
        Some(n) if n > all.len() => bail!(
            "--calib-images {n}: {} holds only {} images",
            path.display(),
            all.len()
        ),
        Some(n) => n,
        None => all.len(),
    };
    let calib = subprune::exec::run::FirstImages::new(all, n);
    if let Some(v) = constant_value(&calib)? {
        eprintln!(
            "warning: every calibration value in {} is {v}: the images carry no information, so \
             the errors will read 0 and the channels kept are arbitrary",
            path.display()
        );
    }
    Ok(calib)
}

/// The one value every image of `source` holds, if they hold only one (all-zero images).
fn constant_value(source: &dyn subprune::exec::run::ImageSource) -> anyhow::Result<Option<f32>> {
    let per: usize = source.image_shape().iter().product();
    let batch = 64.min(source.len().max(1));
    let mut buf = vec![0.0f32; batch * per];
    let mut first_value = None;
    let mut i = 0;
    while i < source.len() {
        let count = batch.min(source.len() - i);
        let chunk = &mut buf[..count * per];
        source.fill(i, chunk)?;
        let v0 = *first_value.get_or_insert(chunk.first().copied().unwrap_or(0.0));
        if chunk.iter().any(|&v| v != v0) {
            return Ok(None);
        }
        i += count;
    }
    Ok(first_value)
}

/// Images from a .npy file: float32 as they are (preprocessed), uint8 normalised with
/// `(x / 255 − mean) / std` per channel.
/// Loads the model, its dynamic input sizes fixed by `--input-shape` or else by the data's image
/// shape (`data`).
pub fn load_model(
    path: &std::path::Path,
    shapes: &crate::args::InputShapeArgs,
    data: Option<&dyn subprune::exec::run::ImageSource>,
) -> anyhow::Result<subprune::onnx::OnnxModel> {
    let options = subprune::onnx::LoadOptions {
        input_shapes: shapes.input_shape.clone(),
        data_shape: data.map(|d| [&[1][..], d.image_shape()].concat()),
    };
    Ok(subprune::onnx::load_with(path, &options)?)
}

pub fn load_images(
    path: &std::path::Path,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    note_unused_normalisation: bool,
) -> anyhow::Result<Box<dyn subprune::exec::run::ImageSource>> {
    use subprune::exec::run::{F32Images, U8Images};
    use subprune::npy::NpyArray;
    Ok(match npy::read_any(path)? {
        NpyArray::F32(t) => {
            if note_unused_normalisation && (mean.is_some() || std.is_some()) {
                eprintln!(
                    "note: --mean/--std apply to uint8 data; the float32 data {} is used as it is",
                    path.display()
                );
            }
            Box::new(F32Images::new(path.display().to_string(), t)?)
        }
        NpyArray::U8 { shape, data } => {
            if mean.is_none() && std.is_none() {
                // Silent otherwise: a model trained on normalised images then scores near chance
                // and nothing says why.
                eprintln!(
                    "note: {} is uint8 and no --mean/--std were given: its pixels are only \
                     scaled to [0, 1] (x / 255); give the dataset's mean and std if the model was \
                     trained on normalised images",
                    path.display()
                );
            }
            Box::new(U8Images::new(
                shape,
                data,
                &mean.unwrap_or(vec![0.0]),
                &std.unwrap_or(vec![1.0]),
            )?)
        }
        other => bail!(
            "{}: dtype {} is not image data (float32 or uint8 expected)",
            path.display(),
            other.dtype()
        ),
    })
}
