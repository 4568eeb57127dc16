//! The `subprune` command line: parses arguments, calls the library, prints.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use subprune::backend::choice::{open_backend_with, BackendChoice, GpuSetup, TileChoice};
use subprune::backend::gpu::{GpuBackend, TileConfig};
use subprune::{npy, Backend, Budget, ConvOptions, CpuBackend, LayerProblem, SelectOptions, Stage};

mod commands;

use commands::{compare as compare_cmd, prune as prune_cmd};

/// `println!` that returns an error from the calling function (all of which return
/// `anyhow::Result`) instead of panicking when standard output is a closed pipe or a full disk.
/// It shadows the standard macro in this file.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).context("writing to standard output")?
    }};
}

#[derive(Parser)]
#[command(
    name = "subprune",
    version,
    about = "Data-efficient structured pruning of CNNs by weakly submodular greedy selection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Compute backend: gpu, cpu, or auto (a hardware GPU when there is one, else the CPU).
    #[arg(long, global = true, default_value = "auto")]
    backend: BackendChoice,
    /// GPU adapter to use: a case-insensitive part of its name (see `subprune devices`);
    /// default: $SUBPRUNE_ADAPTER, else wgpu's high-performance adapter.
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Upload statistics inputs to the GPU as f16 (half the traffic, ~3 significant digits).
    #[arg(long, global = true)]
    f16_inputs: bool,
    /// Do not time the GPU statistics kernels' tile configurations on first use of an adapter
    /// (cached per adapter and driver in $SUBPRUNE_CACHE_DIR, else ~/.cache/subprune): use
    /// the default configuration.
    #[arg(long, global = true)]
    no_autotune: bool,
    /// GPU statistics kernels' tile configuration WGxBK (e.g. 16x16, 8x32), instead of the
    /// autotuned one.
    #[arg(long, global = true, value_name = "WGxBK")]
    tile: Option<TileConfig>,
}

impl Cli {
    /// The backend --backend names; says on stderr which one is used.
    fn open(&self) -> anyhow::Result<Box<dyn Backend>> {
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
        match job(backend.as_ref()) {
            Err(subprune::Error::Gpu(msg)) if self.backend == BackendChoice::Auto => {
                eprintln!("the GPU backend failed ({msg}); falling back to the CPU backend");
                Ok(job(&CpuBackend::new())?)
            }
            result => Ok(result?),
        }
    }

    /// The GPU backend on --adapter, with --f16-inputs.
    fn gpu(&self) -> subprune::Result<GpuBackend> {
        let (gpu, report) = self.gpu_setup().open()?;
        if let Some(r) = report {
            eprintln!("{r}");
            if let Some(p) = &r.cache_problem {
                eprintln!("warning: tile-configuration cache not used: {p}");
            }
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

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
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
    Prune(prune_cmd::PruneArgs),
    /// Compare selection methods × compressions × reweighting on a labelled test set (CSV, SVG).
    Compare(compare_cmd::CompareArgs),
}

#[derive(Args)]
struct InfoArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Images, .npy: float32 preprocessed, or uint8 raw pixels (normalised with --mean/--std).
    #[arg(long)]
    data: PathBuf,
    /// Labels, .npy int64, one per image.
    #[arg(long)]
    labels: PathBuf,
    /// Per-channel mean for uint8 data: one number or "r,g,b" (default 0).
    #[arg(long)]
    mean: Option<String>,
    /// Per-channel std for uint8 data: one number or "r,g,b" (default 1).
    #[arg(long)]
    std: Option<String>,
    /// Images per forward batch (memory holds one batch of activations).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Evaluate only the first N images (and labels).
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Layers to run (resnet56, vgg11, resnet50); all by default.
    #[arg(long = "case")]
    cases: Vec<String>,
    /// Repetitions of the statistics timing (the best is reported).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Skip the full greedy (statistics only).
    #[arg(long)]
    no_greedy: bool,
    /// Also time the GPU statistics with every tile configuration the device allows.
    #[arg(long)]
    tiles: bool,
}

#[derive(Args)]
struct SelectArgs {
    /// Consumer input B, f32 .npy: (N, C) for a Linear consumer, (N, C, H, W) for a Conv one.
    #[arg(long)]
    inputs: PathBuf,
    /// Consumer weight, f32 .npy: (M, C), (M, C, kh, kw), or (M, C·H·W) for conv→flatten→linear.
    #[arg(long)]
    weight: PathBuf,
    /// Target input A (same shape as --inputs) for the asymmetric variant.
    #[arg(long)]
    target: Option<PathBuf>,
    /// Conv stride: one number or "h,w".
    #[arg(long, default_value = "1")]
    stride: String,
    /// Conv zero padding: one number or "h,w".
    #[arg(long, default_value = "0")]
    padding: String,
    /// Conv dilation: one number or "h,w".
    #[arg(long, default_value = "1")]
    dilation: String,
    /// Number of channels to keep.
    #[arg(long, conflicts_with = "keep_fraction")]
    keep: Option<usize>,
    /// Fraction of channels to keep, in (0, 1] (default 0.5).
    #[arg(long)]
    keep_fraction: Option<f64>,
    /// Keep the consumer's original weights for the kept channels instead of the least-squares ones.
    #[arg(long)]
    no_reweight: bool,
    /// Write the new consumer weight (kept input channels only, same layout) to this .npy file.
    #[arg(long)]
    out_weight: Option<PathBuf>,
    /// Print one JSON object: order, kept, error_curve, relative_error.
    #[arg(long)]
    json: bool,
    /// Images per statistics batch.
    #[arg(long, default_value_t = subprune::DEFAULT_BATCH_IMAGES)]
    batch_images: usize,
    /// Relative pivot tolerance under which a channel counts as dependent on the selection.
    #[arg(long, default_value_t = subprune::DEFAULT_DEPENDENCE_TOL)]
    dependence_tol: f64,
    /// Refuse to start when the statistics and greedy state need more memory than this (e.g. 8G);
    /// default: the memory available to the process.
    #[arg(long)]
    memory_limit: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Fraction of channels to keep.
    #[arg(long, default_value_t = 0.25)]
    keep_fraction: f64,
}

fn main() {
    let runtime_dir = private_runtime_dir();
    let result = run();
    if let Some(dir) = runtime_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Err(e) = result {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// ends with (an I/O error names its OS message itself, and would otherwise print it twice).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" whenever a device is
/// opened without one (containers, CI, cron jobs). When it is unset or not a folder, point it at
/// a private folder (mode 0700, removed at exit), created before any thread starts.
fn private_runtime_dir() -> Option<PathBuf> {
    let current = std::env::var_os("XDG_RUNTIME_DIR");
    if current
        .as_ref()
        .is_some_and(|d| std::path::Path::new(d).is_dir())
    {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("subprune-runtime-{}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).ok()?;
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
    Some(dir)
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Select(args) => select(&cli, args),
        Command::Demo(args) => demo(&cli, args),
        Command::Bench(args) => bench(&cli, args),
        Command::Devices => {
            let adapters = GpuBackend::list_adapters();
            if adapters.is_empty() {
                println!(
                    "no GPU adapters (install a Vulkan driver; without a GPU, mesa-vulkan-drivers)"
                );
            }
            for line in adapters {
                println!("{line}");
            }
            Ok(())
        }
        Command::Info(args) => info(args),
        Command::Eval(args) => eval(&cli, args),
        Command::Prune(args) => {
            // The GPU backend (statistics, greedy) and the GPU executor (forward passes) on the
            // same device, or both on the CPU.
            let gpu = forward_gpu(&cli)?;
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
            prune_cmd::run(backend.as_ref(), gpu.as_ref(), args)
        }
        Command::Compare(args) => {
            let backend = cli.open()?;
            compare_cmd::run(backend.as_ref(), args)
        }
    }
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let model = subprune::onnx::load(&args.model)?;
    let summary = subprune::analysis::summary::summarize(&model.graph);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    println!(
        "{}: opset {}, {} nodes, producer {}",
        args.model.display(),
        model.opset,
        summary.nodes,
        model.producer()
    );
    for p in &summary.inputs {
        println!("input  {} {}", p.name, p.shape);
    }
    for p in &summary.outputs {
        println!("output {} {}", p.name, p.shape);
    }
    let ops: Vec<String> = summary
        .op_counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("ops: {}", ops.join(", "));
    println!("parameters: {}", summary.parameters);
    println!(
        "FLOPs per image: {} ({:.2} MFLOPs)",
        summary.flops_per_image,
        summary.flops_per_image as f64 / 1e6
    );
    println!("channel pairs (producer -> consumer: channels x columns per channel, via):");
    for p in &summary.pairs {
        println!(
            "  {} -> {}: {} x {}{}{}",
            p.producer,
            p.consumer,
            p.channels,
            p.columns_per_channel,
            if p.via.is_empty() {
                String::new()
            } else {
                format!(", via {}", p.via.join(" > "))
            },
            if p.coupled {
                " (coupled by a residual)"
            } else {
                ""
            }
        );
    }
    let ch = &summary.channels;
    println!(
        "prunable layers ({}): producer: channels -> consumers (columns per channel)",
        ch.prunable.len()
    );
    for l in &ch.prunable {
        let consumers: Vec<String> = l
            .consumers
            .iter()
            .map(|c| format!("{} ({})", c.name, c.columns_per_channel))
            .collect();
        println!("  {}: {} -> {}", l.name, l.channels, consumers.join(", "));
    }
    println!("coupled layers, left whole ({}):", ch.coupled.len());
    for l in &ch.coupled {
        println!("  {}: {} channels: {}", l.name, l.channels, l.reason);
    }
    Ok(())
}

pub(crate) fn floats(name: &str, text: &str) -> anyhow::Result<Vec<f32>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<f32>()
                .with_context(|| format!("--{name} {text:?}: expected numbers separated by commas"))
        })
        .collect()
}

/// The GPU backend a forward pass runs on, as --backend says: under `auto`, a hardware adapter
/// or the one named, else `None` (the CPU), saying why on stderr.
fn forward_gpu(cli: &Cli) -> anyhow::Result<Option<GpuBackend>> {
    Ok(match cli.backend {
        BackendChoice::Cpu => None,
        BackendChoice::Gpu => Some(cli.gpu()?),
        BackendChoice::Auto => {
            let named =
                cli.adapter.is_some() || std::env::var(subprune::backend::gpu::ADAPTER_ENV).is_ok();
            match cli.gpu() {
                Ok(gpu) if named || !gpu.is_software() => Some(gpu),
                Ok(gpu) => {
                    eprintln!(
                        "backend: cpu (auto, no GPU used: only a software adapter ({}))",
                        gpu.adapter_name()
                    );
                    None
                }
                Err(e) => {
                    let why = e.to_string();
                    eprintln!(
                        "backend: cpu (auto, no GPU used: {})",
                        why.lines().next().unwrap_or_default()
                    );
                    None
                }
            }
        }
    })
}

/// The forward executor --backend names: the GPU executor on the GPU backend (under `auto`, a
/// hardware adapter or the one named), else the CPU executor. Says on stderr which one is used.
fn forward_executor(
    cli: &Cli,
    graph: &subprune::ir::Graph,
) -> anyhow::Result<Box<dyn subprune::exec::Executor>> {
    use subprune::exec::{CpuExecutor, Executor, GpuExecutor};
    let gpu = forward_gpu(cli)?;
    Ok(match gpu {
        Some(gpu) => {
            let exec = GpuExecutor::new(graph, &gpu)?;
            eprintln!("backend: {}", exec.name());
            Box::new(exec)
        }
        None => {
            let exec = CpuExecutor::new(graph)?;
            if cli.backend == BackendChoice::Cpu {
                eprintln!("backend: {}", exec.name());
            }
            Box::new(exec)
        }
    })
}

fn eval(cli: &Cli, args: &EvalArgs) -> anyhow::Result<()> {
    use subprune::exec::run::ImageSource;
    let model = subprune::onnx::load(&args.model)?;
    let exec = forward_executor(cli, &model.graph)?;
    let (_, mut labels) = npy::read_i64(&args.labels)?;
    let mean = args
        .mean
        .as_deref()
        .map(|t| floats("mean", t))
        .transpose()?;
    let std = args.std.as_deref().map(|t| floats("std", t)).transpose()?;
    let source = load_images(&args.data, mean, std, true)?;
    let limited;
    let source: &dyn ImageSource = match args.limit {
        Some(n) if n < source.len() => {
            labels.truncate(n);
            limited = subprune::exec::run::FirstImages::new(source.as_ref(), n);
            &limited
        }
        _ => source.as_ref(),
    };
    let tty = std::io::stderr().is_terminal();
    let mut progress = |done: usize, total: usize| {
        if tty {
            eprint!("\reval: {done}/{total} images\x1b[K");
            if done == total {
                eprintln!();
            }
        }
    };
    let mut report =
        subprune::exec::eval::evaluate(exec.as_ref(), source, &labels, args.batch, &mut progress);
    if let Err(subprune::Error::Gpu(msg)) = &report {
        if cli.backend == BackendChoice::Auto {
            eprintln!("the GPU executor failed ({msg}); falling back to the CPU executor");
            let cpu = subprune::exec::CpuExecutor::new(&model.graph)?;
            report =
                subprune::exec::eval::evaluate(&cpu, source, &labels, args.batch, &mut progress);
        }
    }
    let report = report.with_context(|| {
        format!(
            "evaluating {} on {}",
            args.model.display(),
            args.data.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let pct = |k: usize| 100.0 * k as f64 / report.images as f64;
        println!(
            "top-1 {}/{} ({:.2}%), top-5 {}/{} ({:.2}%), {:.1} images/s, backend {}",
            report.top1,
            report.images,
            pct(report.top1),
            report.top5,
            report.images,
            pct(report.top5),
            report.images_per_second,
            report.backend
        );
    }
    Ok(())
}

/// Images from a .npy file: float32 as they are (preprocessed), uint8 normalised with
/// `(x / 255 − mean) / std` per channel.
pub(crate) fn load_images(
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
        NpyArray::U8 { shape, data } => Box::new(U8Images::new(
            shape,
            data,
            &mean.unwrap_or(vec![0.0]),
            &std.unwrap_or(vec![1.0]),
        )?),
        other => bail!(
            "{}: dtype {} is not image data (float32 or uint8 expected)",
            path.display(),
            other.dtype()
        ),
    })
}

fn pair(name: &str, text: &str) -> anyhow::Result<[usize; 2]> {
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

/// Progress on stderr: a line updated in place on a terminal; otherwise (a log file, a pipe) a
/// line at each quarter of each stage, so that a long run is never silent.
fn progress_printer() -> impl FnMut(Stage, usize, usize) {
    let tty = std::io::stderr().is_terminal();
    let mut last: Option<(Stage, usize)> = None;
    move |stage, done, total| {
        let (label, unit) = match stage {
            Stage::Statistics => ("statistics", "images"),
            Stage::Greedy => ("greedy", "channels"),
        };
        if tty {
            if done == total || done % 8 == 0 {
                eprint!("\r{label}: {done}/{total} {unit}\x1b[K");
                if done == total {
                    eprintln!();
                }
            }
            return;
        }
        let quarter = (done * 4).checked_div(total).unwrap_or(4);
        let previous = match last {
            Some((s, q)) if s == stage => Some(q),
            _ => None,
        };
        if previous != Some(quarter) {
            eprintln!("{label}: {done}/{total} {unit}");
            last = Some((stage, quarter));
        }
    }
}

fn select(cli: &Cli, args: &SelectArgs) -> anyhow::Result<()> {
    // Everything that can be checked without the data is checked before any file is read, and
    // everything else before any work: a bad argument never costs a statistics run.
    let conv = ConvOptions {
        stride: pair("stride", &args.stride)?,
        padding: pair("padding", &args.padding)?,
        dilation: pair("dilation", &args.dilation)?,
    };
    let budget = match (args.keep, args.keep_fraction) {
        (Some(k), _) => Budget::Keep(k),
        (None, Some(f)) => Budget::KeepFraction(f),
        (None, None) => Budget::KeepFraction(0.5),
    };
    let options = SelectOptions {
        budget,
        reweight: !args.no_reweight,
        dependence_tol: args.dependence_tol,
        batch_images: args.batch_images,
    };
    // Any channel count passes a valid keep fraction; --keep is checked against C below.
    options.check(usize::MAX)?;
    let memory_limit = args
        .memory_limit
        .as_deref()
        .map(subprune::plan::parse_bytes)
        .transpose()
        .context("--memory-limit")?;
    if let Some(out) = &args.out_weight {
        let mut inputs = vec![
            ("inputs", args.inputs.as_path()),
            ("weight", args.weight.as_path()),
        ];
        if let Some(t) = &args.target {
            inputs.push(("target", t.as_path()));
        }
        subprune::validate::check_output_path(out, &inputs).context("--out-weight")?;
    }
    let inputs = npy::read_f32(&args.inputs)?;
    let weight = npy::read_f32(&args.weight)?;
    let target = args.target.as_ref().map(npy::read_f32).transpose()?;
    let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(conv))
        .with_context(|| format!("{} with {}", args.inputs.display(), args.weight.display()))?;
    let kept = options.check(problem.layout().channels)?;
    let plan = subprune::Plan::new(&problem, inputs.shape[0], target.is_some(), kept)
        .with_context(|| args.inputs.display().to_string())?;
    plan.check_memory(memory_limit)?;
    eprintln!("{}", plan.summary());
    let layout = problem.layout();
    let rows = plan.rows;
    if rows < layout.columns() {
        eprintln!(
            "warning: {rows} unfolded rows for {} columns ({} channels × {}): past about {} kept \
             channel(s) every further channel is linearly dependent on the kept ones, so the error \
             curve is flat there and the order arbitrary; more calibration images give a \
             meaningful selection",
            layout.columns(),
            layout.channels,
            layout.group,
            rows / layout.group
        );
    }
    let sel = cli.run_on_backend(|backend| {
        subprune::select(
            backend,
            &problem,
            inputs.view(),
            target.as_ref().map(|t| t.view()),
            &options,
            &mut progress_printer(),
        )
    })?;
    if sel.run.total == 0.0 {
        eprintln!(
            "warning: ‖AW‖² = 0: nothing reaches the consumer (the inputs{} or the weight are all \
             zero), so every selection has error 0 and the order is arbitrary",
            if target.is_some() { "/target" } else { "" }
        );
    }
    if let Some(path) = &args.out_weight {
        npy::write_f32(path, &sel.weight)?;
    }
    if args.json {
        let out = serde_json::json!({
            "order": sel.run.order,
            "kept": sel.kept,
            "error_curve": sel.run.error_curve,
            "relative_error": sel.relative_error,
            "greedy_form": match sel.form {
                subprune::GreedyForm::Gram => "gram",
                subprune::GreedyForm::Data => "data",
            },
        });
        println!("{out}");
    } else {
        println!(
            "kept {} of {} channels, relative error {:.6e} ({})",
            sel.kept.len(),
            problem.layout().channels,
            sel.relative_error,
            if options.reweight {
                "reweighted"
            } else {
                "original weights"
            }
        );
        println!("kept channels: {:?}", sel.kept);
        if let Some(path) = &args.out_weight {
            println!(
                "new weight {:?} written to {}",
                sel.weight.shape,
                path.display()
            );
        }
    }
    Ok(())
}

fn demo(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    let (inputs, weight) = subprune::demo::layer();
    let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(subprune::demo::CONV))?;
    let options = SelectOptions {
        budget: Budget::KeepFraction(args.keep_fraction),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let (sel, backend_name) = cli.run_on_backend(|backend| {
        let sel = subprune::select(
            backend,
            &problem,
            inputs.view(),
            None,
            &options,
            &mut progress_printer(),
        )?;
        Ok((sel, backend.name()))
    })?;
    let secs = start.elapsed().as_secs_f64();
    let layout = problem.layout();
    println!(
        "demo layer: inputs {:?}, consumer weight {:?} (stride 1, padding 1), backend {backend_name}",
        inputs.shape, weight.shape,
    );
    println!("greedy error curve (normalized ‖AW − B_S W~‖² / ‖AW‖²):");
    for k in [
        1,
        layout.channels / 8,
        layout.channels / 4,
        layout.channels / 2,
        layout.channels,
    ] {
        let k = k.max(1);
        println!(
            "  keep {k:>3} of {}: {:.4e}",
            layout.channels,
            sel.run.error_curve[k - 1]
        );
    }
    println!(
        "kept {} channels: {:?}\nrelative error {:.4e}, in {:.3} s",
        sel.kept.len(),
        sel.kept,
        sel.relative_error,
        secs
    );
    Ok(())
}

fn bench(cli: &Cli, args: &BenchArgs) -> anyhow::Result<()> {
    use subprune::bench::{self, LayerCase};
    let cases: Vec<LayerCase> = if args.cases.is_empty() {
        bench::CASES.to_vec()
    } else {
        args.cases
            .iter()
            .map(|n| {
                LayerCase::by_name(n).with_context(|| {
                    format!("unknown case {n:?} (known: resnet56, vgg11, resnet50)")
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    // The CPU backend always runs, as the baseline; the GPU one next to it unless --backend cpu.
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::new())];
    let gpu = match cli.backend {
        BackendChoice::Cpu => None,
        BackendChoice::Gpu => Some(cli.gpu()?),
        BackendChoice::Auto => match cli.gpu() {
            Ok(gpu) => Some(gpu),
            Err(e) => {
                eprintln!("no GPU backend in this run: {e}");
                None
            }
        },
    };
    if let Some(gpu) = &gpu {
        println!("GPU statistics kernels: {}", gpu.tile_config());
        backends.push(Box::new(gpu.clone()));
    }
    println!(
        "{:<9} {:>5} {:>3} {:>6} {:>4} | {:<40} {:>9} {:>8} {:>10} | {:>9} {:>11}",
        "case",
        "d",
        "ks",
        "N·L",
        "m",
        "backend",
        "stats s",
        "GFLOP/s",
        "/cpu sgemm",
        "greedy s",
        "cpu/this"
    );
    println!(
        "(GFLOP/s counts 2·N·L·D² as a GEMM of the same shape would; /cpu sgemm = time of a tuned \
         CPU sgemm BᵀB of that shape / stats time; cpu/this = CPU time / this backend's time, for \
         stats / greedy)"
    );
    for case in cases {
        let (problem, inputs) = case.instance(1)?;
        let sgemm = bench::SgemmReference::new(case.rows(), case.columns()).time(args.reps);
        let mut cpu_times: Option<(f64, Option<f64>)> = None;
        for backend in &backends {
            // Untimed runs first, for at least half a second: pipelines compiled, buffers
            // pooled, and a GPU's clocks up from idle (an H100 idles at a sixth of its clock
            // and takes a while to ramp up).
            let warm = std::time::Instant::now();
            while warm.elapsed().as_secs_f64() < 0.5 {
                bench::time_stats(backend.as_ref(), &problem, &inputs)?;
            }
            let mut best = f64::INFINITY;
            let mut stats: Option<subprune::LayerStats> = None;
            for _ in 0..args.reps.max(1) {
                let (t, s) = bench::time_stats(backend.as_ref(), &problem, &inputs)?;
                if t < best {
                    best = t;
                    stats = Some(s);
                }
            }
            let stats = stats.expect("at least one repetition");
            let greedy = if args.no_greedy {
                None
            } else {
                Some(bench::time_greedy(backend.as_ref(), &stats)?)
            };
            let (cpu_stats, cpu_greedy) = *cpu_times.get_or_insert((best, greedy));
            let greedy_cell = greedy.map_or("–".to_string(), |g| format!("{g:.3}"));
            let ratio_greedy = match (cpu_greedy, greedy) {
                (Some(c), Some(g)) => format!("{:.2}x", c / g),
                _ => "–".to_string(),
            };
            println!(
                "{:<9} {:>5} {:>3} {:>6} {:>4} | {:<40} {:>9.4} {:>8.1} {:>10.2} | {:>9} {:>11}",
                case.name,
                case.channels,
                9,
                case.rows(),
                case.outputs,
                backend.name(),
                best,
                case.stats_flops() / best / 1e9,
                sgemm / best,
                greedy_cell,
                format!("{:.2}x/{ratio_greedy}", cpu_stats / best),
            );
            let p = stats.phases;
            println!(
                "{:<9} phases ({}): setup {:.4} s, upload {:.4} s, kernels {:.4} s ({:.1} GFLOP/s), \
                 reduce/C0 {:.4} s, readback {:.4} s, host {:.4} s, other {:.4} s",
                "",
                p.clock.label(),
                p.setup,
                p.upload,
                p.kernel,
                case.stats_flops() / p.kernel.max(1e-12) / 1e9,
                p.reduce,
                p.readback,
                p.host,
                (best - p.total()).max(0.0),
            );
        }
        if let (true, Some(gpu)) = (args.tiles, &gpu) {
            for config in gpu.supported_tile_configs() {
                let tiled = gpu.clone().with_tile_config(config)?;
                bench::time_stats(&tiled, &problem, &inputs)?;
                let mut best: Option<subprune::LayerStats> = None;
                let mut best_time = f64::INFINITY;
                for _ in 0..args.reps.max(1) {
                    let (t, s) = bench::time_stats(&tiled, &problem, &inputs)?;
                    if t < best_time {
                        best_time = t;
                        best = Some(s);
                    }
                }
                let p = best.expect("at least one repetition").phases;
                println!(
                    "{:<9} {config}: stats {best_time:.4} s ({:.1} GFLOP/s), kernels {:.4} s \
                     ({:.1} GFLOP/s, {})",
                    "",
                    case.stats_flops() / best_time / 1e9,
                    p.kernel,
                    case.stats_flops() / p.kernel.max(1e-12) / 1e9,
                    p.clock.label(),
                );
            }
        }
        println!(
            "{:<9} reference sgemm BᵀB ({}×{}ᵀ·{}×{}, gemm crate, CPU): {:.4} s, {:.1} GFLOP/s",
            case.name,
            case.rows(),
            case.columns(),
            case.rows(),
            case.columns(),
            sgemm,
            case.stats_flops() / sgemm / 1e9
        );
    }
    Ok(())
}
