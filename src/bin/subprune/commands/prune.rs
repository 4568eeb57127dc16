//! `subprune prune`: parses the options (a whole-model target and its budget rule included),
//! checks the paths before any work, runs [`subprune::prune::prune_with`] (which plans the
//! budget), writes the model (and the report) atomically, prints the summary table.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use subprune::backend::gpu::GpuBackend;
use subprune::exec::eval::{evaluate, EvalReport};
use subprune::exec::run::ImageSource;
use subprune::exec::Executor;
use subprune::prune::{prune_with, Event, ModelBudget, PruneOptions, ValidationSet, Variant};
use subprune::Backend;

use crate::args::{Cli, PruneArgs};
use crate::progress::Progress;

/// The report with the accuracies the command measured.
#[derive(serde::Serialize)]
struct Report<'a> {
    model: String,
    out: String,
    #[serde(flatten)]
    prune: &'a subprune::prune::PruneReport,
    accuracy_before: Option<EvalReport>,
    accuracy_after: Option<EvalReport>,
    eval_seconds: f64,
    budget: Option<&'a subprune::prune::budget::BudgetPlan>,
}

fn parse_keep(entries: &[String]) -> anyhow::Result<Vec<(String, usize)>> {
    entries
        .iter()
        .map(|e| {
            let (node, k) = e
                .rsplit_once('=')
                .with_context(|| format!("--keep {e:?}: expected NODE=K"))?;
            let k: usize = k
                .trim()
                .parse()
                .with_context(|| format!("--keep {e:?}: K must be a whole number"))?;
            Ok((node.to_string(), k))
        })
        .collect()
}

fn default_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn pct(r: &EvalReport) -> f64 {
    100.0 * r.correct_top1 as f64 / r.images as f64
}

/// Checks the arguments and reads the inputs, then opens the engines --backend names (only then:
/// a first GPU run autotunes its kernels) and prunes.
pub fn run(cli: &Cli, args: &PruneArgs) -> anyhow::Result<()> {
    let demo = args.model.is_none();
    let model_path = args
        .model
        .clone()
        .unwrap_or_else(|| default_fixture("mnist_cnn.onnx"));
    let calib_path = match (&args.calib, demo) {
        (Some(c), _) => c.clone(),
        (None, true) => default_fixture("mnist_calib_512.npy"),
        (None, false) => bail!("--calib is required (calibration images, .npy)"),
    };
    let out = match (&args.out, demo) {
        (Some(o), _) => o.clone(),
        (None, true) => PathBuf::from("mnist_cnn_pruned.onnx"),
        (None, false) => bail!("--out is required (where to write the pruned model)"),
    };
    let (data, labels) = match (&args.data, &args.labels, demo) {
        (Some(d), l, _) => (Some(d.clone()), l.clone()),
        (None, _, true) => (
            Some(default_fixture("mnist_test_u8.npy")),
            Some(default_fixture("mnist_test_labels.npy")),
        ),
        _ => (None, None),
    };
    let norm = &args.normalization;
    let (mean, std) = if demo && norm.mean.is_none() && norm.std.is_none() {
        (Some(vec![0.1307f32]), Some(vec![0.3081f32]))
    } else {
        norm.parse()?
    };
    // Everything checkable without work, before any work.
    let variant: Variant = args.variant.parse()?;
    let method: subprune::prune::select::Method = args.method.parse()?;
    let allocation: subprune::prune::budget::Allocation =
        args.budget.as_deref().unwrap_or("uniform").parse()?;
    let target = match (args.compression, args.target_flops) {
        (Some(r), _) => Some(subprune::prune::budget::Target::Compression(r)),
        (None, Some(f)) => Some(subprune::prune::budget::Target::Flops(f)),
        (None, None) => None,
    };
    if target.is_none() && args.budget.is_some() {
        bail!("--budget splits a --compression or --target-flops target; give one of them");
    }
    match (allocation, &args.validation.val) {
        (subprune::prune::budget::Allocation::Accuracy, None) => bail!(
            "--budget accuracy measures each layer's accuracy on labelled validation images: \
             give --val X.npy --val-labels Y.npy (a held-out split, not the test set)"
        ),
        (a, Some(_)) if a != subprune::prune::budget::Allocation::Accuracy => {
            bail!("--val/--val-labels are only used by --budget accuracy")
        }
        _ => {}
    }
    if let Some(t) = target {
        // Checked before any work (the cost model is only built after loading).
        t.check()?;
    }
    let mut options = PruneOptions {
        variant,
        method,
        seed: args.seed,
        reweight: !args.no_reweight,
        keep_fraction: args.keep_fraction,
        keep: parse_keep(&args.keep)?,
        skip: args.skip.clone(),
        groups: args.groups.parse()?,
        ridge: args.ridge,
        batch_images: args.batch,
        memory_budget: subprune::units::parse_bytes(&args.memory_budget)
            .map_err(subprune::Error::InvalidArgument)?,
        memory_limit: args
            .memory_limit
            .as_deref()
            .map(|t| subprune::units::parse_bytes(t).map_err(subprune::Error::InvalidArgument))
            .transpose()
            .context("--memory-limit")?,
        ..Default::default()
    };
    let outputs = [
        ("--out", Some(out.as_path())),
        ("--report", args.report.as_deref()),
        ("--plot", args.plot.as_deref()),
    ];
    let inputs = [
        ("input model", Some(model_path.as_path())),
        ("--calib", Some(calib_path.as_path())),
        ("--data", data.as_deref()),
        ("--labels", labels.as_deref()),
        ("--val", args.validation.val.as_deref()),
        ("--val-labels", args.validation.val_labels.as_deref()),
    ];
    crate::outputs::check(&outputs, &inputs, None)?;
    // Calibration images: float32 as they are, uint8 normalised (--mean/--std; the test images
    // use the same normalisation), or a folder of images fitted to the model's input. A .npy is
    // read first: its shape fixes the model's dynamic input sizes; a folder is fitted to the
    // model's input, so a dynamic one then needs --input-shape.
    let from_folder = calib_path.is_dir();
    let npy_calib = match from_folder {
        true => None,
        false => Some(super::load_images(
            &calib_path,
            mean.clone(),
            std.clone(),
            data.is_none(),
        )?),
    };
    let model = super::load_model(&model_path, &args.shapes, npy_calib.as_deref())?;
    crate::outputs::check(&outputs, &inputs, Some((&model, Some(&out))))?;
    let prep = crate::data::Preprocess {
        mean,
        std,
        folder: &args.folder,
        graph: &model.graph,
    };
    let pick = args
        .calib_images
        .filter(|_| from_folder)
        .map(|n| (n, args.seed));
    let calib_all = match npy_calib {
        Some(c) => c,
        None => crate::data::load(&calib_path, None, &prep, pick, data.is_none())?.images,
    };
    let calib_limit = args.calib_images.filter(|_| !from_folder);
    let calib = super::first_images(calib_all.as_ref(), calib_limit, &calib_path)?;
    let test = data
        .as_deref()
        .map(|d| crate::data::load_labelled(d, labels.as_deref(), &prep, true))
        .transpose()?;
    let validation = match (&args.validation.val, &args.validation.val_labels) {
        (Some(d), Some(l)) => {
            let (images, labels) = crate::data::load_labelled(d, Some(l), &prep, false)?;
            Some(ValidationSet {
                images: images.into(),
                labels: labels.into(),
            })
        }
        _ => None,
    };
    options.budget = target.map(|target| ModelBudget {
        target,
        allocation,
        validation,
    });
    let (backend, gpu) = super::pruning_engines(cli)?;
    let (backend, gpu): (&dyn Backend, Option<&GpuBackend>) = (backend.as_ref(), gpu.as_ref());
    // The forward passes on the GPU executor when the statistics run on the GPU (tapped
    // activations are copied into the accumulators on the device), else on the CPU executor.
    let factory: &dyn Fn(&subprune::ir::Graph) -> subprune::Result<Box<dyn Executor>> =
        &|g| subprune::exec::executor_on(gpu, g);
    let shown = Progress::stderr();
    let mut eval_seconds = 0.0;
    let mut measure = |graph: &subprune::ir::Graph,
                       what: &str,
                       test: &(Box<dyn ImageSource>, Vec<i64>)|
     -> anyhow::Result<EvalReport> {
        let t = Instant::now();
        let exec = factory(graph)?;
        let bar = shown.bar(&format!("accuracy {what}"), "images");
        let r = evaluate(exec.as_ref(), test.0.as_ref(), &test.1, 128, &mut |d, n| {
            bar.update(d, n)
        })
        .with_context(|| format!("measuring the accuracy {what}"))?;
        bar.finish();
        eval_seconds += t.elapsed().as_secs_f64();
        Ok(r)
    };
    let before = test
        .as_ref()
        .map(|t| measure(&model.graph, "before", t))
        .transpose()?;
    // On a terminal, a bar over the layers and one for the current layer's step; elsewhere a
    // line per layer.
    let layers_bar = shown.bar("layers", "");
    let step_bar = shown.bar("", "");
    let mut layer_name = String::new();
    let mut progress = |e: Event<'_>| match e {
        Event::Layer {
            index,
            layers,
            name,
        } => {
            shown.plain_line(&format!("layer {}/{layers}: {name}", index + 1));
            layers_bar.update(index, layers);
            layers_bar.relabel("layers", name);
            layer_name = name.to_string();
        }
        Event::Forward { done, total } => {
            step_bar.relabel(&format!("{layer_name}: forward + statistics"), "images");
            step_bar.update(done, total);
        }
        Event::Greedy { done, total } => {
            step_bar.relabel(&format!("{layer_name}: greedy"), "channels");
            step_bar.update(done, total);
        }
    };
    let pruned = prune_with(&model, &calib, &options, backend, factory, &mut progress)
        .with_context(|| format!("pruning {}", model_path.display()))?;
    let budget_plan = &pruned.budget;
    step_bar.clear();
    layers_bar.clear();
    // A model read with external data is written with external data (one file beside it).
    let save_options = subprune::onnx::SaveOptions::like_input(&model, &out);
    subprune::onnx::save(&pruned.model, &out, &save_options)?;
    let after = test
        .as_ref()
        .map(|t| measure(&pruned.model.graph, "after", t))
        .transpose()?;
    let r = &pruned.report;
    let report = Report {
        model: model_path.display().to_string(),
        out: out.display().to_string(),
        prune: r,
        accuracy_before: before.clone(),
        accuracy_after: after.clone(),
        eval_seconds,
        budget: budget_plan.as_ref(),
    };
    if let Some(path) = &args.report {
        subprune::npy::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{}: {} {}, {} calibration images",
            model_path
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().to_string()),
            r.variant,
            r.method,
            r.images
        );
        let plot = subprune::prune::plot::prune_plot(r, &title)?;
        subprune::npy::write_atomic(path, plot.svg.as_bytes())?;
    }
    let mut o = std::io::stdout().lock();
    let mut lines = vec![format!(
        "{} → {}: variant {}, method {}, reweight {}, ridge {}, {} calibration images, backend {}, executor {}",
        model_path.display(),
        out.display(),
        args.variant,
        method,
        if r.reweight { "on" } else { "off" },
        r.ridge,
        r.images,
        r.backend,
        r.executor
    )];
    if let Some(p) = budget_plan {
        lines.push(format!(
            "budget {}, allocation {}: cost {:.0} of {:.0} allowed ({:.0} whole){}",
            match p.target {
                subprune::prune::budget::Target::Compression(r) => format!("compression {r}×"),
                subprune::prune::budget::Target::Flops(f) => format!("{f:.0} FLOPs per image"),
            },
            p.allocation.name(),
            p.allocated.cost,
            p.allocated.budget,
            p.allocated.full,
            p.allocated.summed_error.map_or(String::new(), |e| format!(
                ", summed normalised error {e:.4}"
            ))
        ));
        if let Some(s) = &p.sensitivity {
            lines.push(format!(
                "accuracy budget: each layer alone loses at most {:.2} points of validation top-1 \
                 ({:.2}% unpruned, {} images; {} evaluations, {:.1}s)",
                100.0 * p.allocated.accuracy_drop.unwrap_or(0.0),
                100.0 * s.baseline,
                s.images,
                s.evaluations,
                s.seconds
            ));
        }
    }
    lines.push(format!(
        "{:<40} {:>14} {:>10} {:>8}  notes",
        "layer", "channels", "rel.error", "time"
    ));
    for l in &r.layers {
        let mut notes = Vec::new();
        if l.consumers.len() > 1 {
            notes.push(format!("{} consumers", l.consumers.len()));
        }
        if l.rank_deficient {
            notes.push(format!(
                "rank-deficient ({} rows < {} columns)",
                l.rows, l.columns
            ));
        }
        if let Some(z) = l.zero_gain_from {
            notes.push(format!("zero gain from step {}", z + 1));
        }
        lines.push(format!(
            "{:<40} {:>6} → {:<5} {:>10.5} {:>7.2}s  {}",
            l.name,
            l.channels_before,
            l.channels_after,
            l.relative_error,
            l.seconds,
            notes.join(", ")
        ));
    }
    let tied: Vec<&str> = r
        .layers
        .iter()
        .filter(|l| l.zero_gain_from.is_some_and(|z| z < l.channels_after))
        .map(|l| l.name.as_str())
        .collect();
    if r.method == subprune::prune::select::Method::Greedy && !tied.is_empty() {
        lines.push(format!(
            "note: kept past the greedy's last positive gain in {} (every remaining channel \
             ties there and the lowest indices are kept); --method greedy-tail keeps the \
             largest activations there instead",
            tied.join(", ")
        ));
    }
    lines.push(format!(
        "left whole: {} producers (coupled or skipped)",
        r.left_whole.len()
    ));
    lines.push(format!(
        "memory: about {} at the peak for statistics and greedy state (planned before the run)",
        subprune::units::human_bytes(r.memory_peak_bytes)
    ));
    lines.push(format!(
        "parameters {} → {} ({:.1}%), FLOPs per image {} → {} ({:.1}%)",
        r.parameters_before,
        r.parameters_after,
        100.0 * r.parameters_after as f64 / r.parameters_before.max(1) as f64,
        r.flops_before,
        r.flops_after,
        100.0 * r.flops_after as f64 / r.flops_before.max(1) as f64
    ));
    if let (Some(b), Some(a)) = (&before, &after) {
        lines.push(format!(
            "top-1 accuracy {:.2}% → {:.2}% ({} test images)",
            pct(b),
            pct(a),
            a.images
        ));
    }
    let evaluation = if before.is_some() || after.is_some() {
        format!("; evaluation {eval_seconds:.2}s")
    } else {
        String::new()
    };
    lines.push(format!(
        "time {:.2}s: forward + statistics {:.2}s, greedy {:.2}s, reweight {:.2}s{}",
        r.seconds, r.phases.forward_and_statistics, r.phases.greedy, r.phases.reweight, evaluation
    ));
    for l in lines {
        writeln!(o, "{l}").context("writing to standard output")?;
    }
    Ok(())
}
