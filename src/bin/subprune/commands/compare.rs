//! `subprune compare`: parses the options, runs [`subprune::prune::compare::compare`], writes the CSV
//! and the SVG plot atomically and prints the table (top-1, mean over seeds, per method and
//! compression).

use std::io::Write;
use std::time::Instant;
use subprune::exec::run::ImageSource as _;

use anyhow::{bail, Context};
use subprune::backend::gpu::GpuBackend;
use subprune::prune::budget::Allocation;
use subprune::prune::compare::{compare, series, to_csv, to_svg, CompareEvent, CompareOptions};
use subprune::prune::select::Method;
use subprune::prune::PruneOptions;
use subprune::Backend;

use crate::args::{Cli, CompareArgs};
use crate::progress::Progress;

/// Checks the arguments and reads the inputs, then opens the engines --backend names
/// (statistics, greedy and forward passes on one GPU, or all on the CPU) and compares.
pub fn run(cli: &Cli, args: &CompareArgs) -> anyhow::Result<()> {
    let methods = args
        .methods
        .split(',')
        .map(|m| m.trim())
        .filter(|m| !m.is_empty() && *m != "greedy-asym")
        .map(|m| m.parse::<Method>())
        .collect::<subprune::Result<Vec<_>>>()?;
    let compressions = args
        .compressions
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<f64>()
                .with_context(|| format!("--compressions: '{c}' is not a number"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(r) = compressions.iter().find(|r| !(r.is_finite() && **r > 1.0)) {
        bail!("--compressions: {r} is not a ratio > 1");
    }
    let csv = args.out.with_extension("csv");
    let svg = args.out.with_extension("svg");
    let inputs = [
        ("input model", Some(args.model.as_path())),
        ("--calib", Some(args.calib.as_path())),
        ("--data", Some(args.data.as_path())),
        ("--labels", args.labels.as_deref()),
        ("--val", args.validation.val.as_deref()),
        ("--val-labels", args.validation.val_labels.as_deref()),
    ];
    let outputs = [("CSV", Some(csv.as_path())), ("SVG", Some(svg.as_path()))];
    crate::outputs::check(&outputs, &inputs, None)?;
    let allocations = args
        .budget
        .split(',')
        .map(|b| b.trim())
        .filter(|b| !b.is_empty())
        .map(|b| b.parse::<Allocation>())
        .collect::<subprune::Result<Vec<_>>>()?;
    let accuracy = allocations.contains(&Allocation::Accuracy);
    if accuracy && args.validation.val.is_none() {
        bail!(
            "--budget accuracy measures each layer's accuracy on labelled validation images: \
             give --val X.npy --val-labels Y.npy (a held-out split, not the test set)"
        );
    }
    if !accuracy && args.validation.val.is_some() {
        bail!("--val/--val-labels are only used by --budget accuracy");
    }
    let options = CompareOptions {
        methods,
        asym: !args.no_asym,
        compressions,
        seeds: args.seeds,
        allocations,
        prune: PruneOptions {
            ridge: args.ridge,
            batch_images: args.batch,
            skip: args.skip.clone(),
            groups: args.groups.parse()?,
            ..Default::default()
        },
        eval_batch: 256,
    };
    let (mean, std) = args.normalization.parse()?;
    let from_folder = args.calib.is_dir();
    let npy_calib = match from_folder {
        true => None,
        false => Some(super::load_images(
            &args.calib,
            mean.clone(),
            std.clone(),
            false,
        )?),
    };
    let model = super::load_model(&args.model, &args.shapes, npy_calib.as_deref())?;
    crate::outputs::check(&outputs, &inputs, Some((&model, None)))?;
    let prep = crate::data::Preprocess {
        mean,
        std,
        folder: &args.folder,
        graph: &model.graph,
    };
    let pick = args.calib_images.filter(|_| from_folder).map(|n| (n, 0));
    let calib_all = match npy_calib {
        Some(c) => c,
        None => crate::data::load(&args.calib, None, &prep, pick, false)?.images,
    };
    let calib_limit = args.calib_images.filter(|_| !from_folder);
    let calib = super::first_images(calib_all.as_ref(), calib_limit, &args.calib)?;
    let (test, mut labels) =
        crate::data::load_labelled(&args.data, args.labels.as_deref(), &prep, true)?;
    // --limit N: the first N test images and labels (every row is evaluated on the same ones).
    let limited;
    let test: &dyn subprune::exec::run::ImageSource = match args.limit {
        Some(0) => bail!("--limit must be ≥ 1"),
        Some(n) if n < test.len() => {
            labels.truncate(n);
            limited = subprune::exec::run::FirstImages::new(test.as_ref(), n);
            &limited
        }
        _ => test.as_ref(),
    };
    let val = match (&args.validation.val, &args.validation.val_labels) {
        (Some(d), Some(l)) => Some(crate::data::load_labelled(d, Some(l), &prep, false)?),
        _ => None,
    };
    let (backend, gpu) = super::pruning_engines(cli)?;
    let (backend, gpu): (&dyn Backend, Option<&GpuBackend>) = (backend.as_ref(), gpu.as_ref());
    let factory = |g: &subprune::ir::Graph| subprune::exec::executor_on(gpu, g);
    let shown = Progress::stderr();
    let stats_bar = shown.bar("statistics", "images");
    // Only runs with the accuracy budget get this bar.
    let mut sensitivity_bar = None;
    let rows_bar = shown.bar("pruned models", "rows");
    let rows = options.row_count();
    let mut rows_done = 0;
    let start = Instant::now();
    let mut progress = |e: CompareEvent| match e {
        CompareEvent::Statistics(d, n) => {
            stats_bar.update(d, n);
            if d == n {
                stats_bar.finish();
            }
        }
        CompareEvent::Sensitivity(d, n) => {
            let bar =
                sensitivity_bar.get_or_insert_with(|| shown.bar("accuracy budget", "evaluations"));
            bar.update(d, n);
            if d == n {
                bar.finish();
            }
        }
        CompareEvent::Row(r) => {
            shown.line(&format!(
                "[{:>7.1}s] {:>4}× {:<15} {:<4} {:<7} top-1 {:.4}  ({:.0}× achieved; prune {:.2}s, eval {:.2}s)",
                start.elapsed().as_secs_f64(),
                r.target,
                r.method,
                if r.reweight { "LS" } else { "orig" },
                r.seed.map_or(String::new(), |s| format!("seed {s}")),
                r.top1,
                r.compression,
                r.prune_seconds,
                r.eval_seconds
            ));
            rows_done += 1;
            rows_bar.update(rows_done, rows.max(rows_done));
        }
    };
    let result = compare(
        &model,
        &calib,
        test,
        &labels,
        val.as_ref().map(
            |(images, labels)| subprune::prune::sensitivity::Validation {
                images: images.as_ref(),
                labels,
            },
        ),
        &options,
        backend,
        &factory,
        &mut progress,
    )
    .with_context(|| format!("comparing on {}", args.model.display()))?;
    rows_bar.clear();
    subprune::npy::write_atomic(&csv, to_csv(&result.rows).as_bytes())?;
    let title = format!(
        "{}: top-1 after pruning ({} calibration images, no fine-tuning)",
        args.model
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().to_string()),
        calib.len()
    );
    subprune::npy::write_atomic(&svg, to_svg(&result, &title)?.as_bytes())?;
    let mut o = std::io::stdout().lock();
    let mut lines = vec![format!(
        "{}: {} parameters, top-1 {:.4} unpruned; {} calibration images; statistics {:.1}s, greedy {:.1}s, total {:.1}s",
        args.model.display(),
        result.parameters,
        result.baseline_top1,
        calib.len(),
        result.stats_seconds,
        result.greedy_seconds,
        start.elapsed().as_secs_f64()
    )];
    if let Some(s) = &result.sensitivity {
        lines.push(format!(
            "accuracy budget: validation top-1 {:.4} unpruned on {} images; {} evaluations, {:.1}s",
            s.baseline, s.images, s.evaluations, s.seconds
        ));
    }
    for (a, r, sizes) in &result.allocations {
        lines.push(format!(
            "{a} {r}×: kept {}",
            sizes
                .iter()
                .map(|(n, d, k)| format!("{n} {k}/{d}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let all = series(&result.rows);
    let several_budgets = result
        .allocations
        .iter()
        .any(|a| a.0 != result.allocations[0].0);
    let mut header = format!("{:<30}", "method");
    if let Some(s) = all.first() {
        for p in &s.points {
            header.push_str(&format!(" {:>14}", format!("{}× ({:.1}×)", p.0, p.1)));
        }
    }
    lines.push(header);
    for s in &all {
        let mut line = format!(
            "{:<30}",
            format!(
                "{}{}{}",
                s.method,
                if s.reweight { " + LS" } else { "" },
                if several_budgets {
                    format!(" ({})", s.budget)
                } else {
                    String::new()
                }
            )
        );
        for p in &s.points {
            let cell = if p.5 > 1 {
                format!("{:.4}±{:.3}", p.2, (p.4 - p.3) / 2.0)
            } else {
                format!("{:.4}", p.2)
            };
            line.push_str(&format!(" {cell:>14}"));
        }
        lines.push(line);
    }
    lines.push(format!("wrote {} and {}", csv.display(), svg.display()));
    for l in lines {
        writeln!(o, "{l}").context("writing to standard output")?;
    }
    Ok(())
}
