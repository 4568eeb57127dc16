//! Choosing a backend by name (`--backend cpu|gpu|auto`), with a logged fall-back for `auto`.

use std::path::PathBuf;
use std::str::FromStr;

use super::cpu::CpuBackend;
use super::gpu::{GpuBackend, TileConfig, TuneReport};
use super::Backend;
use crate::error::{Error, Result};

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The CPU backend.
    Cpu,
    /// The wgpu backend; an error if no adapter can be opened.
    Gpu,
    /// A hardware GPU when wgpu finds one (or the adapter asked for by name); otherwise the CPU
    /// backend. A software adapter (lavapipe) is not chosen automatically: the CPU backend is
    /// faster than an emulated GPU.
    #[default]
    Auto,
}

impl FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            "auto" => Ok(Self::Auto),
            other => Err(Error::InvalidArgument(format!(
                "unknown backend {other:?}: expected cpu, gpu or auto"
            ))),
        }
    }
}

/// An opened backend and a line saying which one was chosen and why.
pub struct OpenedBackend {
    /// The backend.
    pub backend: Box<dyn Backend>,
    /// E.g. `gpu: NVIDIA H100 (Vulkan)` or `cpu (2 threads) (auto: no hardware GPU adapter: ...)`.
    pub note: String,
}

/// How a GPU backend's statistics kernels get their tile configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TileChoice {
    /// The first configuration of [`TileConfig::ALL`] that fits the device (no timing).
    #[default]
    Default,
    /// This configuration (an error if it does not fit the device).
    Fixed(TileConfig),
    /// [`GpuBackend::autotune`] with this cache file (`None`: measure, cache nothing).
    Autotune(Option<PathBuf>),
}

/// Everything that configures a GPU backend when one is opened.
#[derive(Clone, Debug, Default)]
pub struct GpuSetup {
    /// A case-insensitive part of the adapter's name; `None`: `SUBPRUNE_ADAPTER`, else wgpu's
    /// high-performance adapter.
    pub adapter: Option<String>,
    /// The f16 input path ([`GpuBackend::with_f16_inputs`]).
    pub f16_inputs: bool,
    /// The statistics kernels' tile configuration.
    pub tiles: TileChoice,
}

impl GpuSetup {
    /// Opens the GPU backend; with [`TileChoice::Autotune`] also the tuning report.
    pub fn open(&self) -> Result<(GpuBackend, Option<TuneReport>)> {
        self.configure(self.open_device()?)
    }

    /// Opens the GPU backend on the adapter asked for, without choosing its tile configuration
    /// (no autotuning yet): to look at the adapter before spending time on it.
    pub fn open_device(&self) -> Result<GpuBackend> {
        GpuBackend::new(self.adapter.as_deref()).map_err(shorten)
    }

    /// Sets an opened backend up as asked: f16 inputs, and the tile configuration (fixed, the
    /// default, or autotuned, with the tuning report).
    pub fn configure(&self, gpu: GpuBackend) -> Result<(GpuBackend, Option<TuneReport>)> {
        let gpu = gpu.with_f16_inputs(self.f16_inputs);
        match &self.tiles {
            TileChoice::Default => Ok((gpu, None)),
            TileChoice::Fixed(config) => Ok((gpu.with_tile_config(*config)?, None)),
            TileChoice::Autotune(cache) => {
                let (gpu, report) = gpu.autotune(cache.as_deref())?;
                Ok((gpu, Some(report)))
            }
        }
    }
}

/// The note line of an opened GPU backend.
fn gpu_note(gpu: &GpuBackend, report: Option<&TuneReport>, auto: bool) -> String {
    let mut note = format!("backend: gpu, {}", gpu.name());
    if auto {
        note.push_str(" (auto)");
    }
    if let Some(line) = report.and_then(TuneReport::worth_saying) {
        note.push_str(&format!("\n{line}"));
    }
    note
}

/// Opens the backend `choice` names. `adapter` (a substring of the adapter's name) picks the GPU;
/// without it the `SUBPRUNE_ADAPTER` environment variable does, else wgpu's high-performance one.
/// `f16_inputs` turns on the GPU's f16 input path ([`GpuBackend::with_f16_inputs`]). The GPU's
/// tile configuration is the default one; [`open_backend_with`] chooses it otherwise.
pub fn open_backend(
    choice: BackendChoice,
    adapter: Option<&str>,
    f16_inputs: bool,
) -> Result<OpenedBackend> {
    open_backend_with(
        choice,
        &GpuSetup {
            adapter: adapter.map(str::to_string),
            f16_inputs,
            tiles: TileChoice::Default,
        },
    )
}

/// [`open_backend`] with every GPU setting of `setup` (including autotuning).
pub fn open_backend_with(choice: BackendChoice, setup: &GpuSetup) -> Result<OpenedBackend> {
    match choice {
        BackendChoice::Cpu => {
            let cpu = CpuBackend::new();
            Ok(OpenedBackend {
                note: format!("backend: {}", cpu.name()),
                backend: Box::new(cpu),
            })
        }
        BackendChoice::Gpu => {
            let (gpu, report) = setup.open()?;
            Ok(OpenedBackend {
                note: gpu_note(&gpu, report.as_ref(), false),
                backend: Box::new(gpu),
            })
        }
        BackendChoice::Auto => {
            let chosen = choose_gpu(choice, setup)?;
            match (chosen.gpu, chosen.cpu_because) {
                (Some(gpu), _) => Ok(OpenedBackend {
                    note: gpu_note(&gpu, chosen.tune.as_ref(), true),
                    backend: Box::new(gpu),
                }),
                (None, why) => {
                    let cpu = CpuBackend::new();
                    Ok(OpenedBackend {
                        note: format!(
                            "backend: {} (auto, no GPU used: {})",
                            cpu.name(),
                            why.unwrap_or_default()
                        ),
                        backend: Box::new(cpu),
                    })
                }
            }
        }
    }
}

/// The GPU a job runs on as `choice` says, or none (the CPU), and why.
pub struct ChosenGpu {
    /// The GPU backend, set up as asked; `None`: run on the CPU.
    pub gpu: Option<GpuBackend>,
    /// The autotuning report, when the tiles were measured now.
    pub tune: Option<TuneReport>,
    /// Under `auto` without a GPU: why none was used (one line), e.g. `only a software adapter
    /// (llvmpipe)`.
    pub cpu_because: Option<String>,
}

/// The GPU `choice` names: `cpu` none; `gpu` the adapter of `setup` (an error if it cannot be
/// opened); `auto` a hardware adapter, or the one named by `setup.adapter` or
/// `SUBPRUNE_ADAPTER`, else none with the reason. The tiles are set up (autotuned, if asked) only
/// for a GPU that will run. The whole-network commands run their forward passes and statistics
/// on it (`exec::executor_on`).
pub fn choose_gpu(choice: BackendChoice, setup: &GpuSetup) -> Result<ChosenGpu> {
    let chosen = |gpu: GpuBackend| -> Result<ChosenGpu> {
        let (gpu, tune) = setup.configure(gpu)?;
        Ok(ChosenGpu {
            gpu: Some(gpu),
            tune,
            cpu_because: None,
        })
    };
    let why = match choice {
        BackendChoice::Cpu => None,
        BackendChoice::Gpu => return chosen(setup.open_device()?),
        BackendChoice::Auto => {
            let named = setup.adapter.is_some() || std::env::var(super::gpu::ADAPTER_ENV).is_ok();
            match setup.open_device() {
                Ok(gpu) if named || !gpu.is_software() => return chosen(gpu),
                Ok(gpu) => Some(format!("only a software adapter ({})", gpu.adapter_name())),
                Err(e) => Some(e.to_string().lines().next().unwrap_or_default().to_string()),
            }
        }
    };
    Ok(ChosenGpu {
        gpu: None,
        tune: None,
        cpu_because: why,
    })
}

/// What to say when wgpu finds no adapter: what happened, then what to do, a short line each.
pub const NO_ADAPTER: &str = "no GPU adapter found (no Vulkan, Metal or DX12 device)\n\
    run with --backend cpu, or install a GPU driver (without a GPU: mesa-vulkan-drivers)";

/// wgpu's no-adapter error arrives as one long line listing every backend it tried: replace it
/// with [`NO_ADAPTER`]. Other errors pass through.
fn shorten(e: Error) -> Error {
    match e {
        Error::Gpu(msg) if msg.starts_with("no GPU adapter found") => {
            Error::Gpu(NO_ADAPTER.to_string())
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_names() {
        assert_eq!("cpu".parse::<BackendChoice>().unwrap(), BackendChoice::Cpu);
        assert_eq!(
            " GPU ".parse::<BackendChoice>().unwrap(),
            BackendChoice::Gpu
        );
        assert_eq!(
            "auto".parse::<BackendChoice>().unwrap(),
            BackendChoice::Auto
        );
        let err = "cuda".parse::<BackendChoice>().unwrap_err().to_string();
        assert!(
            err.contains("cuda") && err.contains("cpu, gpu or auto"),
            "{err}"
        );
    }

    #[test]
    fn cpu_choice_opens_the_cpu_backend() {
        let opened = open_backend(BackendChoice::Cpu, None, false).unwrap();
        assert!(opened.backend.name().starts_with("cpu"), "{}", opened.note);
    }

    #[test]
    fn auto_never_settles_on_a_software_adapter_unless_named() {
        // Whatever this machine has: a hardware adapter gives the GPU, lavapipe alone or no
        // adapter at all gives the CPU with the reason in the note.
        if std::env::var(super::super::gpu::ADAPTER_ENV).is_err() {
            let opened = open_backend(BackendChoice::Auto, None, false).unwrap();
            let on_cpu = opened.backend.name().starts_with("cpu");
            match GpuBackend::new(None) {
                Ok(gpu) if !gpu.is_software() => assert!(!on_cpu, "{}", opened.note),
                Ok(_) => {
                    assert!(on_cpu, "{}", opened.note);
                    assert!(opened.note.contains("software adapter"), "{}", opened.note);
                }
                Err(_) => assert!(on_cpu, "{}", opened.note),
            }
        }
        let missing =
            open_backend(BackendChoice::Auto, Some("no-such-adapter-xyz"), false).unwrap();
        assert!(
            missing.backend.name().starts_with("cpu"),
            "{}",
            missing.note
        );
        assert!(
            missing.note.contains("no-such-adapter-xyz"),
            "{}",
            missing.note
        );
        assert!(open_backend(BackendChoice::Gpu, Some("no-such-adapter-xyz"), false).is_err());
    }
}
