//! The command line's flags and arguments (clap), and the parsers of their values. Nothing here
//! opens a file or starts any work.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use subprune::backend::choice::BackendChoice;
use subprune::backend::gpu::TileConfig;

/// The help heading of the flags every command takes (the backend's), apart from the command's own.
const BACKEND_OPTIONS: &str = "Backend options (any command)";

#[derive(Parser)]
#[command(
    name = "subprune",
    version,
    about = "Data-efficient structured pruning of CNNs by weakly submodular greedy selection"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Compute backend: gpu, cpu, or auto (a hardware GPU when there is one, else the CPU).
    #[arg(long, global = true, help_heading = BACKEND_OPTIONS, default_value = "auto")]
    pub backend: BackendChoice,
    /// GPU adapter to use: a case-insensitive part of its name (see `subprune devices`);
    /// default: $SUBPRUNE_ADAPTER, else wgpu's high-performance adapter.
    #[arg(long, global = true, help_heading = BACKEND_OPTIONS)]
    pub adapter: Option<String>,
    /// Upload statistics inputs to the GPU as f16 (half the traffic, ~3 significant digits).
    #[arg(long, global = true, help_heading = BACKEND_OPTIONS)]
    pub f16_inputs: bool,
    /// Do not time the GPU statistics kernels' tile configurations on first use of an adapter
    /// (cached per adapter and driver in $SUBPRUNE_CACHE_DIR, else ~/.cache/subprune): use
    /// the default configuration.
    #[arg(long, global = true, help_heading = BACKEND_OPTIONS)]
    pub no_autotune: bool,
    /// GPU statistics kernels' tile configuration WGxBK (e.g. 16x16, 8x32), instead of the
    /// autotuned one.
    #[arg(long, global = true, help_heading = BACKEND_OPTIONS, value_name = "WGxBK")]
    pub tile: Option<TileConfig>,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Select the channels to keep for one layer and the new consumer weight.
    Select(SelectArgs),
    /// Run the selection on the built-in synthetic conv layer and print the error curve.
    Demo(DemoArgs),
    /// Time the statistics and the full greedy on paper-sized layers, backends side by side.
    Bench(BenchArgs),
    /// List the GPU adapters wgpu can see.
    Devices,
    /// Describe an ONNX model: inputs, outputs, ops, parameters, FLOPs, channel pairs.
    Info(InfoArgs),
    /// Top-1/top-5 accuracy of an ONNX classifier on a labelled data set.
    Eval(EvalArgs),
    /// Prune a whole ONNX network and write the smaller model.
    Prune(PruneArgs),
    /// Compare selection methods × compressions × reweighting on a labelled test set (CSV, SVG).
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
pub struct InputShapeArgs {
    /// Shape of a graph input the file leaves dynamic (height, width), batch first:
    /// 1,3,320,320, or NAME:1,3,320,320 for one of several inputs (repeat the flag). Without it,
    /// eval, prune and compare take the sizes from the data.
    #[arg(long = "input-shape", value_name = "[NAME:]DIMS")]
    pub input_shape: Vec<subprune::onnx::InputShape>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// The ONNX model.
    pub model: PathBuf,
    #[command(flatten)]
    pub shapes: InputShapeArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The ONNX model.
    pub model: PathBuf,
    #[command(flatten)]
    pub shapes: InputShapeArgs,
    /// Images: .npy (float32 preprocessed, or uint8 raw pixels normalised with --mean/--std),
    /// or a folder of JPEG/PNG images (one subfolder per class; see --resize, --crop).
    #[arg(long)]
    pub data: PathBuf,
    /// Labels: .npy int64, one per image (in the folder's sorted order for a folder), or for a
    /// folder a text file of `PATH LABEL` lines; default for a folder: its class subfolders.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub normalization: Normalization,
    #[command(flatten)]
    pub folder: FolderArgs,
    /// Images per forward batch (memory holds one batch of activations).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Evaluate only the first N images (and labels).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Layers to run (resnet56, vgg11, resnet50, or `C,S,N,M`: C channels of S×S maps, N images,
    /// M outputs); the three named ones by default.
    #[arg(long = "case")]
    pub cases: Vec<String>,
    /// Repetitions of the statistics timing (the best is reported).
    #[arg(long, default_value_t = 2)]
    pub reps: usize,
    /// Skip the full greedy (statistics only).
    #[arg(long)]
    pub no_greedy: bool,
    /// Also time the GPU statistics with every tile configuration the device allows.
    #[arg(long)]
    pub tiles: bool,
    /// Skip the asymmetric statistics (a target `A` next to the inputs, as `prune --variant
    /// asym` accumulates them: multiply-adds per backend, and the GPU's projected form against
    /// its unprojected one).
    #[arg(long)]
    pub no_asym: bool,
    /// Only the asymmetric statistics (no symmetric rows, no greedy, no sgemm reference).
    #[arg(long, conflicts_with = "no_asym")]
    pub asym_only: bool,
    /// Also time the GPU statistics (inputs already on the device) with each of these row-split
    /// counts (split-K slices, e.g. `1,8,32,64`) instead of the one chosen from the adapter.
    #[arg(long, value_delimiter = ',')]
    pub splits: Vec<u32>,
    /// Prune a whole synthetic network end to end instead of timing single layers (`resnet50`:
    /// ResNet-50's shape, seeded random weights, its 32 bottleneck convs pruned to half, `asym`).
    #[arg(long)]
    pub network: Option<String>,
    /// Calibration images (seeded random) for --network.
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Image side for --network.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
}

#[derive(Args)]
pub struct SelectArgs {
    /// Consumer input B, f32 .npy: (N, C) for a Linear consumer, (N, C, H, W) for a Conv one.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Consumer weight, f32 .npy: (M, C), (M, C, kh, kw), or (M, C·H·W) for conv→flatten→linear.
    #[arg(long)]
    pub weight: PathBuf,
    /// Target input A (same shape as --inputs) for the asymmetric variant.
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// Conv stride: one number or "h,w".
    #[arg(long, default_value = "1")]
    pub stride: String,
    /// Conv zero padding: one number or "h,w".
    #[arg(long, default_value = "0")]
    pub padding: String,
    /// Conv dilation: one number or "h,w".
    #[arg(long, default_value = "1")]
    pub dilation: String,
    /// Number of channels to keep.
    #[arg(long, conflicts_with = "keep_fraction")]
    pub keep: Option<usize>,
    /// Fraction of channels to keep, in (0, 1] (default 0.5).
    #[arg(long, allow_negative_numbers = true)]
    pub keep_fraction: Option<f64>,
    /// Keep the consumer's original weights for the kept channels instead of the least-squares ones.
    #[arg(long)]
    pub no_reweight: bool,
    /// Relative ridge of the reweighting: λ = ridge · mean diag G[S,S] (0: plain least squares).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub ridge: f64,
    /// Write the new consumer weight (kept input channels only, same layout) to this .npy file.
    #[arg(long)]
    pub out_weight: Option<PathBuf>,
    /// Print one JSON object: order, kept, error_curve, relative_error.
    #[arg(long)]
    pub json: bool,
    /// Images per statistics batch.
    #[arg(long, default_value_t = subprune::DEFAULT_BATCH_IMAGES)]
    pub batch_images: usize,
    /// Relative pivot tolerance under which a channel counts as dependent on the selection.
    #[arg(long, default_value_t = subprune::DEFAULT_DEPENDENCE_TOL, allow_negative_numbers = true)]
    pub dependence_tol: f64,
    /// Refuse to start when the statistics and greedy state need more memory than this (e.g. 8G);
    /// default: the memory available to the process.
    #[arg(long)]
    pub memory_limit: Option<String>,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Fraction of channels to keep.
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    pub keep_fraction: f64,
}

#[derive(Args)]
pub struct PruneArgs {
    /// The ONNX model (default: the MNIST CNN embedded in this program's repository,
    /// tests/fixtures/mnist_cnn.onnx, with its 512 calibration images and MNIST's mean/std).
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub shapes: InputShapeArgs,
    /// Calibration images: .npy (float32 preprocessed, or uint8 normalised with --mean/--std),
    /// or a folder of JPEG/PNG images (see --resize, --crop).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Use only the first N calibration images (a folder: N drawn with --seed).
    #[arg(long)]
    pub calib_images: Option<usize>,
    #[command(flatten)]
    pub normalization: Normalization,
    #[command(flatten)]
    pub folder: FolderArgs,
    /// Where to write the pruned model (never the input).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// layer (original activations), seq (pruned network), asym (pruned inputs, original targets).
    #[arg(long, default_value = "asym")]
    pub variant: String,
    /// Selection method: greedy (the paper's), random, weight-norm, act-norm, layer-sampling, or
    /// greedy-tail (the greedy until its gains reach 0, then the largest activations: for layers
    /// whose consumer has more columns than calibration rows).
    #[arg(long, default_value = "greedy")]
    pub method: String,
    /// Seed of the random methods (random, layer-sampling) and of --calib-images from a folder.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Whole-model target: parameters at most (the model's count) / R, R > 1 (instead of
    /// --keep-fraction; sizes from --budget).
    #[arg(long, conflicts_with_all = ["keep", "target_flops"], allow_negative_numbers = true)]
    pub compression: Option<f64>,
    /// Whole-model target: FLOPs per image at most this many (e.g. 2e6).
    #[arg(long, conflicts_with = "keep", allow_negative_numbers = true)]
    pub target_flops: Option<f64>,
    /// How a --compression/--target-flops target is split over layers: uniform (one fraction),
    /// error (least summed normalised greedy error; one extra forward pass and greedy run) or
    /// accuracy (equal accuracy loss per layer, measured on --val/--val-labels; one evaluation
    /// of the validation images per layer and grid size). Default uniform.
    #[arg(long)]
    pub budget: Option<String>,
    #[command(flatten)]
    pub validation: ValidationArgs,
    /// Fraction of channels kept in every block-internal group, in (0, 1]; a stream group keeps
    /// F^¼ of its channels (as with the uniform budget).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub keep_fraction: f64,
    /// Channels kept in one group: GROUP=K, the group named by its first producer as `info`
    /// lists it (repeatable; overrides --keep-fraction there).
    #[arg(long)]
    pub keep: Vec<String>,
    /// Leave a group whole, named by its first producer (repeatable).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Which channel groups to prune: all (block-internal groups, residual streams, Concat/Split
    /// blocks) or internal (block-internal groups only, streams left whole).
    #[arg(long, default_value = "all")]
    pub groups: String,
    /// Keep the consumers' original weights for the kept channels.
    #[arg(long)]
    pub no_reweight: bool,
    /// Relative ridge of the reweighting: λ = ridge · mean diag G[S,S].
    #[arg(long, default_value_t = subprune::prune::DEFAULT_RIDGE, allow_negative_numbers = true)]
    pub ridge: f64,
    /// Memory for cached activations of the seq/asym variants (e.g. 2G).
    #[arg(long, default_value = "2G")]
    pub memory_budget: String,
    /// Refuse to start when the statistics and greedy state need more than this at the peak
    /// (e.g. 8G); default: the memory available to the process.
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// Images per forward batch.
    #[arg(long, default_value_t = subprune::DEFAULT_BATCH_IMAGES)]
    pub batch: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Test images to measure accuracy before and after: .npy (with --labels) or a folder of
    /// images (labels from class subfolders or --labels).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test labels (.npy int64; for a folder also a text file of `PATH LABEL` lines).
    #[arg(long, requires = "data")]
    pub labels: Option<PathBuf>,
    /// Draw each layer's greedy error curve (kept size marked) and the parameters per layer
    /// before and after, as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

#[derive(Args)]
pub struct CompareArgs {
    /// The ONNX model.
    pub model: PathBuf,
    #[command(flatten)]
    pub shapes: InputShapeArgs,
    /// Calibration images: .npy (float32 preprocessed, or uint8 with --mean/--std), or a folder
    /// of JPEG/PNG images (see --resize, --crop).
    #[arg(long)]
    pub calib: PathBuf,
    /// Test images: .npy, or a folder of images (labels from class subfolders or --labels).
    #[arg(long)]
    pub data: PathBuf,
    /// Test labels: .npy int64 (for a folder also a text file of `PATH LABEL` lines).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Evaluate every row on the first N test images (and labels) only.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub normalization: Normalization,
    #[command(flatten)]
    pub folder: FolderArgs,
    /// Use only the first N calibration images (a folder: N drawn with seed 0).
    #[arg(long)]
    pub calib_images: Option<usize>,
    /// Layer-wise methods, comma-separated (greedy, random, weight-norm, act-norm, layer-sampling,
    /// greedy-tail).
    #[arg(
        long,
        default_value = "greedy,random,weight-norm,act-norm,layer-sampling"
    )]
    pub methods: String,
    /// Leave out the greedy in the asymmetric sequential variant (greedy-asym).
    #[arg(long)]
    pub no_asym: bool,
    /// Only the asymmetric statistics (no symmetric rows, no greedy, no sgemm reference).
    #[arg(long, conflicts_with = "no_asym")]
    pub asym_only: bool,
    /// Compression ratios of the parameter count, comma-separated.
    #[arg(long, default_value = "2,4,8,16,32")]
    pub compressions: String,
    /// Seeds for the random methods.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// How each compression is split over layers, comma-separated (every method runs with
    /// each): uniform, error, accuracy (needs --val/--val-labels).
    #[arg(long, default_value = "uniform")]
    pub budget: String,
    #[command(flatten)]
    pub validation: ValidationArgs,
    /// Relative ridge of the reweighting.
    #[arg(long, default_value_t = subprune::prune::DEFAULT_RIDGE, allow_negative_numbers = true)]
    pub ridge: f64,
    /// Leave a prunable layer whole in every row (repeatable), as `prune --skip`.
    #[arg(long)]
    pub skip: Vec<String>,
    /// Which channel groups to prune in every row, as `prune --groups`: all or internal.
    #[arg(long, default_value = "all")]
    pub groups: String,
    /// Images per forward batch.
    #[arg(long, default_value_t = subprune::DEFAULT_BATCH_IMAGES)]
    pub batch: usize,
    /// Output prefix: writes PREFIX.csv and PREFIX.svg.
    #[arg(long, default_value = "compare")]
    pub out: PathBuf,
}

/// How uint8 images are normalised, `(x/255 − mean[c]) / std[c]` (eval, prune, compare).
#[derive(Args)]
pub struct Normalization {
    /// Per-channel mean for uint8 data: one number or "r,g,b" (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub mean: Option<String>,
    /// Per-channel std for uint8 data: one number or "r,g,b" (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub std: Option<String>,
}

/// How the images of a folder (`--calib DIR`, `--data DIR`) are fitted to the model's input.
#[derive(Args)]
pub struct FolderArgs {
    /// Image folders: resize each image's shorter side to S (bilinear) before the centre crop;
    /// default: no resize (images at least the model's input size, centre-cropped to it).
    #[arg(long, value_name = "S")]
    pub resize: Option<usize>,
    /// Image folders: the centre crop H,W (default: the model's input size; needed when the
    /// model's input size is not fixed).
    #[arg(long, value_name = "H,W")]
    pub crop: Option<String>,
}

impl FolderArgs {
    /// The parsed `--crop`.
    pub fn crop(&self) -> anyhow::Result<Option<[usize; 2]>> {
        if self.resize == Some(0) {
            bail!("--resize must be ≥ 1");
        }
        self.crop.as_deref().map(|c| pair("crop", c)).transpose()
    }
}

/// Per-channel values of `--mean` or `--std`; `None` where not given.
pub type PerChannel = Option<Vec<f32>>;

impl Normalization {
    /// The parsed `(mean, std)`.
    pub fn parse(&self) -> anyhow::Result<(PerChannel, PerChannel)> {
        let list =
            |name, text: &Option<String>| text.as_deref().map(|t| floats(name, t)).transpose();
        Ok((list("mean", &self.mean)?, list("std", &self.std)?))
    }
}

/// The labelled validation split of the accuracy budget (prune, compare).
#[derive(Args)]
pub struct ValidationArgs {
    /// Validation images (.npy, float32 or uint8 with --mean/--std) for --budget accuracy: a
    /// held-out split, not the test set.
    #[arg(long, requires = "val_labels")]
    pub val: Option<PathBuf>,
    /// Validation labels (.npy int64), one per --val image.
    #[arg(long, requires = "val")]
    pub val_labels: Option<PathBuf>,
}

/// A list of numbers separated by commas (`--mean 0.5,0.4,0.3`).
pub fn floats(name: &str, text: &str) -> anyhow::Result<Vec<f32>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<f32>()
                .with_context(|| format!("--{name} {text:?}: expected numbers separated by commas"))
        })
        .collect()
}

/// One number or "h,w" (`--stride 2`, `--padding 1,0`).
pub fn pair(name: &str, text: &str) -> anyhow::Result<[usize; 2]> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let parse = |s: &str| {
        s.parse::<usize>()
            .with_context(|| format!("--{name} {text:?}: expected a number or \"h,w\""))
    };
    match parts.as_slice() {
        [a] => {
            let v = parse(a)?;
            Ok([v, v])
        }
        [a, b] => Ok([parse(a)?, parse(b)?]),
        _ => bail!("--{name} {text:?}: expected a number or \"h,w\""),
    }
}
