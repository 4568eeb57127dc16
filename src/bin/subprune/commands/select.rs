//! `subprune select`: the channels to keep for one layer given as .npy files, and the new
//! consumer weight.

use anyhow::Context;
use subprune::{npy, Budget, ConvOptions, LayerProblem, SelectOptions};

use crate::args::{pair, Cli, SelectArgs};
use crate::progress::Progress;

pub fn run(cli: &Cli, args: &SelectArgs) -> anyhow::Result<()> {
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
        ridge: args.ridge,
        dependence_tol: args.dependence_tol,
        batch_images: args.batch_images,
    };
    // Any channel count passes a valid keep fraction; --keep is checked against C below, but 0
    // is wrong whatever C is (and usize::MAX is no channel count to print).
    if budget == Budget::Keep(0) {
        anyhow::bail!("--keep 0: at least 1 channel must be kept");
    }
    options.check(usize::MAX)?;
    let memory_limit = args
        .memory_limit
        .as_deref()
        .map(|t| subprune::units::parse_bytes(t).map_err(subprune::Error::InvalidArgument))
        .transpose()
        .context("--memory-limit")?;
    crate::outputs::check(
        &[("--out-weight", args.out_weight.as_deref())],
        &[
            ("inputs", Some(args.inputs.as_path())),
            ("weight", Some(args.weight.as_path())),
            ("target", args.target.as_deref()),
        ],
        None,
    )?;
    let inputs = npy::read_f32(&args.inputs)?;
    let weight = npy::read_f32(&args.weight)?;
    let target = args.target.as_ref().map(npy::read_f32).transpose()?;
    let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(conv))
        .with_context(|| format!("{} with {}", args.inputs.display(), args.weight.display()))?;
    let kept = options.check(problem.layout().channels)?;
    let plan = subprune::CostPlan::new(&problem, inputs.shape[0], target.is_some(), kept)
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
            layout.columns_per_channel,
            rows / layout.columns_per_channel
        );
    }
    let progress = Progress::stderr();
    let sel = cli.run_on_backend(|backend| {
        subprune::select(
            backend,
            &problem,
            inputs.view(),
            target.as_ref().map(|t| t.view()),
            &options,
            &mut progress.stages(),
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
        let out = sel.summary_json();
        outln!("{out}");
    } else {
        outln!(
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
        outln!("kept channels: {:?}", sel.kept);
        if let Some(path) = &args.out_weight {
            outln!(
                "new weight {:?} written to {}",
                sel.weight.shape,
                path.display()
            );
        }
    }
    Ok(())
}
