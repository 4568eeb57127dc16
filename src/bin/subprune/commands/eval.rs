//! `subprune eval`: top-1/top-5 accuracy of an ONNX classifier on a labelled data set.

use anyhow::Context;
use subprune::backend::choice::BackendChoice;

use super::forward_executor;
use crate::args::{Cli, EvalArgs};
use crate::progress::Progress;

pub fn run(cli: &Cli, args: &EvalArgs) -> anyhow::Result<()> {
    use subprune::exec::run::ImageSource;
    let (mean, std) = args.normalization.parse()?;
    // A .npy's shape fixes the model's dynamic input sizes; a folder is fitted to the model.
    let npy = match args.data.is_dir() {
        true => None,
        false => Some(super::load_images(
            &args.data,
            mean.clone(),
            std.clone(),
            true,
        )?),
    };
    let model = super::load_model(&args.model, &args.shapes, npy.as_deref())?;
    let exec = forward_executor(cli, &model.graph)?;
    let prep = crate::data::Preprocess {
        mean,
        std,
        folder: &args.folder,
        graph: &model.graph,
    };
    let (source, mut labels) = match npy {
        Some(images) => match args.labels.as_deref() {
            Some(l) => (images, subprune::npy::read_labels(l)?),
            None => anyhow::bail!("{}: give its labels (.npy int64)", args.data.display()),
        },
        None => crate::data::load_labelled(&args.data, args.labels.as_deref(), &prep, true)?,
    };
    let limited;
    let source: &dyn ImageSource = match args.limit {
        Some(n) if n < source.len() => {
            labels.truncate(n);
            limited = subprune::exec::run::FirstImages::new(source.as_ref(), n);
            &limited
        }
        _ => source.as_ref(),
    };
    let shown = Progress::stderr();
    let bar = shown.bar("eval", "images");
    let mut progress = |done: usize, total: usize| bar.update(done, total);
    let mut report =
        subprune::exec::eval::evaluate(exec.as_ref(), source, &labels, args.batch, &mut progress);
    if let Some(subprune::Error::Gpu(msg)) = report.as_ref().err().map(|e| e.root()) {
        if cli.backend == BackendChoice::Auto {
            eprintln!("the GPU executor failed ({msg}); falling back to the CPU executor");
            let cpu = subprune::exec::CpuExecutor::new(&model.graph)?;
            report =
                subprune::exec::eval::evaluate(&cpu, source, &labels, args.batch, &mut progress);
        }
    }
    bar.finish();
    let report = report.with_context(|| {
        format!(
            "evaluating {} on {}",
            args.model.display(),
            args.data.display()
        )
    })?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        let pct = |k: usize| 100.0 * k as f64 / report.images as f64;
        outln!(
            "top-1 {}/{} ({:.2}%), top-5 {}/{} ({:.2}%), {:.1} images/s, backend {}",
            report.correct_top1,
            report.images,
            pct(report.correct_top1),
            report.correct_top5,
            report.images,
            pct(report.correct_top5),
            report.images_per_second,
            report.backend
        );
    }
    Ok(())
}
