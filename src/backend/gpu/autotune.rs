//! Choosing the statistics kernels' tile configuration per adapter: every configuration the
//! device allows is timed on a representative conv layer, the fastest wins, and the choice is
//! cached per adapter and driver (a JSON file in the user's cache directory), so the timing runs
//! once per machine and driver.
//!
//! The representative layer is a 3 × 3, padding-1 conv consumer on 8 × 8 maps, sized to the
//! adapter: 256 channels (D = 2304) over 8192 unfolded rows on a hardware GPU (about 87 GFLOP
//! counted as a GEMM: a few ms on a large GPU, well under a second on a small one), 32 channels
//! over 512 rows on a software adapter (which is only ever used for testing). Each configuration
//! is run once to compile and warm up, then timed three times; the best kernel time counts
//! (GPU timestamps where the adapter has them, wall-clock otherwise).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{GpuBackend, TileConfig};
use crate::backend::{Backend, StatsSpec};
use crate::error::{Error, Result};
use crate::layer::{ConvOptions, LayerProblem};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Environment variable naming the folder of subprune's caches (overrides the platform's).
pub const CACHE_DIR_ENV: &str = "SUBPRUNE_CACHE_DIR";
/// File name of the tile-configuration cache inside the cache folder.
const CACHE_FILE: &str = "tile-configs.json";
/// Format version of the cache file; entries of another version are measured again.
const CACHE_VERSION: u32 = 1;
/// Timed runs per configuration (after one warm-up run).
const REPS: usize = 3;

/// Where a backend's tile configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneSource {
    /// Read from the cache, measured earlier on this adapter and driver.
    Cached,
    /// Measured now (and written to the cache when there is one).
    Measured,
    /// Only one configuration fits the device: nothing to measure.
    Only,
}

/// The outcome of [`GpuBackend::autotune`].
#[derive(Clone, Debug)]
pub struct TuneReport {
    /// The configuration chosen.
    pub config: TileConfig,
    /// Where it came from.
    pub source: TuneSource,
    /// Kernel seconds of each configuration on the representative layer (when measured now,
    /// or as recorded in the cache).
    pub timings: Vec<(TileConfig, f64)>,
    /// The cache file used, if any.
    pub cache: Option<PathBuf>,
    /// Why the cache could not be read or written, if it could not (the choice still holds).
    pub cache_problem: Option<String>,
}

impl TuneReport {
    /// What a run should print about the tiles: the report when it measured them now, and a
    /// warning when the cache could not be used; nothing when a cached or the only configuration
    /// was taken (the same line on every run is noise).
    pub fn worth_saying(&self) -> Option<String> {
        let mut lines = Vec::new();
        if self.source == TuneSource::Measured {
            lines.push(self.to_string());
        }
        if let Some(p) = &self.cache_problem {
            lines.push(format!("warning: tile-configuration cache not used: {p}"));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

impl std::fmt::Display for TuneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.source {
            TuneSource::Cached => "cached",
            TuneSource::Measured => "autotuned",
            TuneSource::Only => "the only one that fits",
        };
        write!(f, "statistics kernels: {} ({how}", self.config)?;
        if let Some(path) = &self.cache {
            write!(f, "; cache {}", path.display())?;
        }
        write!(f, ")")
    }
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    version: u32,
    adapters: BTreeMap<String, CacheEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
struct CacheEntry {
    config: TileConfig,
    /// (configuration, kernel seconds) as measured.
    timings: Vec<(TileConfig, f64)>,
}

/// The default cache file: `$SUBPRUNE_CACHE_DIR/tile-configs.json`, else
/// `$XDG_CACHE_HOME/subprune/…`, else `~/.cache/subprune/…` (`%LOCALAPPDATA%\subprune\…` on
/// Windows, `~/Library/Caches/subprune/…` on macOS). `None` when no such folder is known.
pub fn default_cache_path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env(CACHE_DIR_ENV) {
        return Some(dir.join(CACHE_FILE));
    }
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("subprune").join(CACHE_FILE))
}

fn read_cache(path: &Path) -> std::result::Result<CacheFile, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let file: CacheFile = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a tile-configuration cache ({e})", path.display()))?;
            if file.version != CACHE_VERSION {
                return Ok(CacheFile::default());
            }
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CacheFile::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_cache(path: &Path, file: &CacheFile) -> std::result::Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    crate::npy::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

impl GpuBackend {
    /// Chooses the statistics kernels' tile configuration for this adapter: from the cache file
    /// `cache` (see [`default_cache_path`]) when it holds an entry for [`Self::adapter_key`] that
    /// still fits the device, else by timing every configuration that fits on a representative
    /// layer (module doc) and writing the winner to the cache. `cache = None` measures without
    /// reading or writing any file. A cache that cannot be read or written is reported in
    /// [`TuneReport::cache_problem`], not as an error; GPU failures while timing are errors.
    pub fn autotune(self, cache: Option<&Path>) -> Result<(Self, TuneReport)> {
        let candidates = self.supported_tile_configs();
        let Some(&first) = candidates.first() else {
            return Err(Error::Gpu(format!(
                "no tile configuration of the statistics kernels fits {}",
                self.adapter_name()
            )));
        };
        let key = self.adapter_key();
        let mut problem = None;
        let mut file = CacheFile {
            version: CACHE_VERSION,
            ..Default::default()
        };
        if let Some(path) = cache {
            match read_cache(path) {
                Ok(f) => {
                    file.adapters = f.adapters;
                    if let Some(entry) = file.adapters.get(&key) {
                        if candidates.contains(&entry.config) {
                            let report = TuneReport {
                                config: entry.config,
                                source: TuneSource::Cached,
                                timings: entry.timings.clone(),
                                cache: Some(path.to_path_buf()),
                                cache_problem: None,
                            };
                            return Ok((self.with_tile_config(entry.config)?, report));
                        }
                    }
                }
                Err(e) => problem = Some(e),
            }
        }
        if candidates.len() == 1 {
            let report = TuneReport {
                config: first,
                source: TuneSource::Only,
                timings: Vec::new(),
                cache: None,
                cache_problem: problem,
            };
            return Ok((self.with_tile_config(first)?, report));
        }
        let timings = self.time_tile_configs(&candidates)?;
        let best = timings
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|t| t.0)
            .unwrap_or(first);
        if let Some(path) = cache {
            // A cache that could not be parsed is replaced; one that could not be read is left.
            if problem.as_deref().is_none_or(|p| p.contains("not a tile")) {
                file.adapters.insert(
                    key,
                    CacheEntry {
                        config: best,
                        timings: timings.clone(),
                    },
                );
                if let Err(e) = write_cache(path, &file) {
                    problem = Some(e);
                }
            }
        }
        let report = TuneReport {
            config: best,
            source: TuneSource::Measured,
            timings,
            cache: cache.map(Path::to_path_buf),
            cache_problem: problem,
        };
        Ok((self.with_tile_config(best)?, report))
    }

    /// Kernel seconds of each configuration on the representative layer (best of `REPS`).
    pub fn time_tile_configs(&self, configs: &[TileConfig]) -> Result<Vec<(TileConfig, f64)>> {
        let (channels, images) = if self.is_software() {
            (32, 8)
        } else {
            (256, 128)
        };
        let mut rng = Rng::new(0x7113);
        let inputs = Tensor::new(
            vec![images, channels, 8, 8],
            rng.normal_vec(images * channels * 64)
                .into_iter()
                .map(|v| v.max(0.0))
                .collect(),
        )?;
        let weight = Tensor::new(vec![8, channels, 3, 3], rng.normal_vec(8 * channels * 9))?;
        let conv = ConvOptions {
            padding: [1, 1],
            ..ConvOptions::default()
        };
        let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(conv))?;
        let mut out = Vec::with_capacity(configs.len());
        for &config in configs {
            let backend = self.clone().with_tile_config(config)?;
            let mut best = f64::INFINITY;
            for rep in 0..=REPS {
                // One batch of every image through the accumulator, finished with the weight:
                // what a layer's statistics run does (the kernel phase is the Gram kernels').
                let spec = StatsSpec::new(problem.unfolding, false)
                    .with_weight(&problem.weight, problem.outputs);
                let mut acc = backend.stats_accumulator(spec)?;
                acc.add_batch(inputs.view(), None)?;
                let raw = acc.finish_with_weight(&problem.weight, problem.outputs)?;
                if rep > 0 {
                    best = best.min(raw.phases.kernel);
                }
            }
            out.push((config, best));
        }
        Ok(out)
    }
}
