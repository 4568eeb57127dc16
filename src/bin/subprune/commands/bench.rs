//! `subprune bench`: the statistics and the full greedy on paper-sized layers, the backends
//! side by side, against a tuned CPU sgemm of the same shape.

use std::io::IsTerminal;

use anyhow::{bail, Context};
use subprune::backend::choice::BackendChoice;
use subprune::{Backend, CpuBackend};

use crate::args::{BenchArgs, Cli};

pub fn run(cli: &Cli, args: &BenchArgs) -> anyhow::Result<()> {
    use subprune::bench::{self, LayerCase};
    if args.splits.contains(&0) {
        bail!("--splits: a split count must be ≥ 1 (got 0)");
    }
    if let Some(network_name) = &args.network {
        return network(cli, args, network_name);
    }
    let cases: Vec<LayerCase> = if args.cases.is_empty() {
        bench::CASES.to_vec()
    } else {
        args.cases
            .iter()
            .map(|n| {
                LayerCase::by_name(n).with_context(|| {
                    format!(
                        "unknown case {n:?} (known: resnet56, vgg11, resnet50, or C,S,N,M: \
                         channels, map side, images, outputs)"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    // Planned before any work: an impossible or too large case is refused up front.
    for case in &cases {
        case.check_memory(None)?;
    }
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
        outln!("GPU statistics kernels: {}", gpu.tile_config());
        backends.push(Box::new(gpu.clone()));
    }
    if args.asym_only {
        outln!(
            "(asym: statistics with a target A, C0 = Bᵀ(A·W) and ‖AW‖²; multiply-adds of the \
             sums over the unfolded rows; kernels from GPU timestamps where the adapter has them)"
        );
    } else {
        print_header()?;
    }
    for case in cases {
        let (problem, inputs) = case.instance(1)?;
        if args.asym_only {
            outln!(
                "{:<9} d {}, D {}, N·L {}, m {}",
                case.name,
                case.channels,
                case.columns(),
                case.rows(),
                case.outputs
            );
            asym(args.reps, &problem, &inputs, gpu.as_ref())?;
            continue;
        }
        // The first half of the images, for the part of the time that does not grow with them.
        let half_images = (case.images / 2).max(1);
        let mut half_shape = inputs.shape.clone();
        half_shape[0] = half_images;
        let half_len = half_images * inputs.data.len() / case.images;
        let half = subprune::Tensor::new(half_shape, inputs.data[..half_len].to_vec())?;
        let sgemm = bench::SgemmReference::new(case.rows(), case.columns()).time(args.reps)?;
        let mut cpu_times: Option<(f64, Option<f64>)> = None;
        for backend in &backends {
            let backend = backend.as_ref();
            let (best, stats) = best_of(args.reps, true, || {
                bench::time_stats(backend, &problem, &inputs)
            })?;
            let (best_half, _) = best_of(args.reps, false, || {
                bench::time_stats(backend, &problem, &half)
            })?;
            let greedy = if args.no_greedy {
                None
            } else {
                Some(bench::time_greedy(backend, &stats)?)
            };
            let (cpu_stats, cpu_greedy) = *cpu_times.get_or_insert((best, greedy));
            let greedy_cell = greedy.map_or("–".to_string(), |g| format!("{g:.3}"));
            let ratio_greedy = match (cpu_greedy, greedy) {
                (Some(c), Some(g)) => format!("{:.2}x", c / g),
                _ => "–".to_string(),
            };
            outln!(
                "{:<9} {:>5} {:>3} {:>6} {:>4} | {:<40} {:>9.5} {:>8.1} {:>10.2} | {:>9} {:>11}",
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
            print_phases(&case, best, best_half, half_images, &stats.phases)?;
        }
        if let Some(gpu) = &gpu {
            // As `prune --backend gpu` feeds them: activations already on the device.
            let resident = bench::ResidentInputs::new(gpu, &inputs)?;
            let resident_half = bench::ResidentInputs::new(gpu, &half)?;
            let (best, stats) = best_of(args.reps, true, || {
                bench::time_stats_resident(gpu, &problem, &resident)
            })?;
            let (best_half, _) = best_of(args.reps, false, || {
                bench::time_stats_resident(gpu, &problem, &resident_half)
            })?;
            outln!(
                "{:<9} inputs already on the device: stats {best:.5} s ({:.1} GFLOP/s), \
                 cpu/this {:.2}x",
                "",
                case.stats_flops() / best / 1e9,
                cpu_times.map_or(f64::NAN, |c| c.0) / best,
            );
            print_phases(&case, best, best_half, half_images, &stats.phases)?;
        }
        if !args.no_asym {
            asym(args.reps, &problem, &inputs, gpu.as_ref())?;
        }
        if let Some(gpu) = gpu.as_ref().filter(|_| !args.splits.is_empty()) {
            let resident = bench::ResidentInputs::new(gpu, &inputs)?;
            for &splits in &args.splits {
                let split = gpu.clone().with_row_splits(Some(splits));
                let (best_time, best) = best_of(args.reps, true, || {
                    bench::time_stats_resident(&split, &problem, &resident)
                })?;
                let p = best.phases;
                outln!(
                    "{:<9} row splits {splits} (dispatched {}): stats {best_time:.5} s \
                     ({:.1} GFLOP/s, inputs on the device), kernels {:.5} s ({:.1} GFLOP/s), \
                     reduce/C0 {:.5} s ({})",
                    "",
                    p.row_splits,
                    case.stats_flops() / best_time / 1e9,
                    p.kernel,
                    case.stats_flops() / p.kernel.max(1e-12) / 1e9,
                    p.reduce,
                    p.clock.label(),
                );
            }
        }
        if let (true, Some(gpu)) = (args.tiles, &gpu) {
            for config in gpu.supported_tile_configs() {
                let tiled = gpu.clone().with_tile_config(config)?;
                let (best_time, best) = best_of(args.reps, true, || {
                    bench::time_stats(&tiled, &problem, &inputs)
                })?;
                let p = best.phases;
                outln!(
                    "{:<9} {config}: stats {best_time:.5} s ({:.1} GFLOP/s), kernels {:.5} s \
                     ({:.1} GFLOP/s, {})",
                    "",
                    case.stats_flops() / best_time / 1e9,
                    p.kernel,
                    case.stats_flops() / p.kernel.max(1e-12) / 1e9,
                    p.clock.label(),
                );
            }
        }
        outln!(
            "{:<9} reference sgemm BᵀB ({}×{}ᵀ·{}×{}, gemm crate, CPU): {:.5} s, {:.1} GFLOP/s",
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

/// The column heads of the per-backend rows.
fn print_header() -> anyhow::Result<()> {
    outln!(
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
    outln!(
        "(GFLOP/s counts 2·N·L·D² as a GEMM of the same shape would; /cpu sgemm = time of a tuned \
         CPU sgemm BᵀB of that shape / stats time; cpu/this = CPU time / this backend's time, for \
         stats / greedy)"
    );
    Ok(())
}

/// The asymmetric statistics of one case (a seeded target next to the inputs): the
/// multiply-adds and times on the CPU, and on the GPU with the projected form and the
/// unprojected one side by side (same process, same inputs).
fn asym(
    reps: usize,
    problem: &subprune::LayerProblem,
    inputs: &subprune::Tensor,
    gpu: Option<&subprune::GpuBackend>,
) -> anyhow::Result<()> {
    use subprune::bench;
    let target = bench::asym_target(2, inputs)?;
    let cpu = CpuBackend::new();
    let mut rows: Vec<(String, &dyn Backend)> = vec![("cpu".into(), &cpu)];
    let old = gpu.map(|g| g.clone().with_projected_statistics(false));
    let projected = gpu.map(|g| g.clone().with_projected_statistics(true));
    if let (Some(p), Some(o)) = (&projected, &old) {
        rows.push(("gpu, projected A·W".into(), p));
        rows.push(("gpu, unprojected AᵀA".into(), o));
    }
    let mut kernels = Vec::new();
    for (label, backend) in rows {
        // No warm-up run: the kernel times come from the device's own clock where it has one.
        let (best, stats) = best_of(reps, false, || {
            bench::time_asym_stats(backend, problem, inputs, &target)
        })?;
        let p = stats.phases;
        outln!(
            "{:<9} asym {label:<22}: {:.4e} multiply-adds, stats {best:.5} s, kernels {:.5} s, \
             reduce/C0 {:.5} s ({})",
            "",
            p.multiply_adds as f64,
            p.kernel,
            p.reduce,
            p.clock.label(),
        );
        kernels.push(p.kernel);
    }
    if let [_, projected, old] = kernels[..] {
        outln!(
            "{:<9} asym gpu kernels: unprojected / projected = {:.2}x",
            "",
            old / projected.max(1e-12)
        );
    }
    Ok(())
}

/// `bench --network`: one end-to-end pruning run on the CPU (backend and executor), then on the
/// GPU unless `--backend cpu`.
fn network(cli: &Cli, args: &BenchArgs, network: &str) -> anyhow::Result<()> {
    use subprune::exec::{Executor, GpuExecutor};
    use subprune::prune::{cpu_engines, Event, PruneOptions};
    let model = match network {
        "resnet50" => subprune::synthetic::resnet50(1, args.size, 1000)?,
        other => bail!("unknown network {other:?} (known: resnet50)"),
    };
    if args.images == 0 {
        bail!("--images must be ≥ 1");
    }
    let calib = subprune::bench::random_images(2, args.images, &[3, args.size, args.size])?;
    let options = PruneOptions::default();
    outln!(
        "synthetic {network}, {}×{} input, {} parameters; {} random calibration images; \
         variant {}, keep {}, reweight {}",
        args.size,
        args.size,
        model.graph.parameter_count(),
        args.images,
        options.variant,
        options.keep_fraction,
        options.reweight
    );
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
    let tty = std::io::stderr().is_terminal();
    let mut progress = |e: Event<'_>| {
        if let (
            true,
            Event::Layer {
                index,
                layers,
                name,
            },
        ) = (tty, e)
        {
            eprint!("\rlayer {}/{layers}: {name}\x1b[K", index + 1);
        }
    };
    let (cpu, cpu_factory) = cpu_engines();
    let mut runs = vec![(
        cpu.name(),
        subprune::bench::time_prune(&model, &calib, &options, &cpu, &cpu_factory, &mut progress)?,
    )];
    if let Some(gpu) = &gpu {
        let factory = |g: &subprune::ir::Graph| -> subprune::Result<Box<dyn Executor>> {
            Ok(Box::new(GpuExecutor::new(g, gpu)?) as Box<dyn Executor>)
        };
        let t =
            subprune::bench::time_prune(&model, &calib, &options, gpu, &factory, &mut progress)?;
        runs.push((gpu.name(), t));
    }
    if tty {
        eprintln!();
    }
    outln!(
        "{:<48} {:>8} {:>14} {:>8} {:>9} {:>7} {:>12}",
        "backend (statistics, greedy and forward passes)",
        "total s",
        "fwd + stats s",
        "greedy s",
        "reweight s",
        "layers",
        "cpu/this"
    );
    let cpu_seconds = runs[0].1.seconds;
    for (name, t) in &runs {
        outln!(
            "{:<48} {:>8.2} {:>14.2} {:>8.2} {:>9.2} {:>7} {:>11.2}x",
            name,
            t.seconds,
            t.phases.forward_and_statistics,
            t.phases.greedy,
            t.phases.reweight,
            t.layers,
            cpu_seconds / t.seconds
        );
    }
    let (before, after) = runs[0].1.parameters;
    outln!("parameters {before} → {after}");
    Ok(())
}

/// The best of `reps` timed statistics runs (after at least half a second of untimed ones when
/// `warm`: pipelines compiled, buffers pooled, and a GPU's clocks up from idle; an H100 idles at
/// a sixth of its clock and takes a while to ramp up).
fn best_of(
    reps: usize,
    warm: bool,
    mut run: impl FnMut() -> subprune::Result<(f64, subprune::LayerStats)>,
) -> anyhow::Result<(f64, subprune::LayerStats)> {
    let start = std::time::Instant::now();
    while warm && start.elapsed().as_secs_f64() < 0.5 {
        run()?;
    }
    let mut best: Option<(f64, subprune::LayerStats)> = None;
    for _ in 0..reps.max(1) {
        let (t, stats) = run()?;
        if best.as_ref().is_none_or(|b| t < b.0) {
            best = Some((t, stats));
        }
    }
    Ok(best.expect("at least one repetition"))
}

/// The phase breakdown of the best run, and the part of its time that does not grow with the
/// number of images.
fn print_phases(
    case: &subprune::bench::LayerCase,
    best: f64,
    best_half: f64,
    half_images: usize,
    p: &subprune::layer::StatsPhases,
) -> anyhow::Result<()> {
    outln!(
        "{:<9} phases ({}): setup {:.5} s, upload {:.5} s, kernels {:.5} s ({:.1} GFLOP/s), \
         reduce/C0 {:.5} s, readback {:.5} s, host {:.5} s, other {:.5} s{}",
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
        match p.row_splits {
            0 => String::new(),
            s => format!(", row splits {s}"),
        },
    );
    outln!(
        "{:<9} fixed cost {:.2} ms (2·t({half_images} images) − t({}), t({half_images}) = {:.5} s)",
        "",
        1e3 * subprune::bench::fixed_cost(best, best_half),
        case.images,
        best_half,
    );
    Ok(())
}
