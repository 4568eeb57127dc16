//! `subprune demo`: the selection on the built-in synthetic conv layer, with its error curve.

use subprune::{Budget, LayerProblem, SelectOptions};

use crate::args::{Cli, DemoArgs};
use crate::progress::Progress;

pub fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    let (inputs, weight) = subprune::demo::layer();
    let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(subprune::demo::CONV))?;
    let options = SelectOptions {
        budget: Budget::KeepFraction(args.keep_fraction),
        ..Default::default()
    };
    let progress = Progress::stderr();
    let start = std::time::Instant::now();
    let (sel, backend_name) = cli.run_on_backend(|backend| {
        let sel = subprune::select(
            backend,
            &problem,
            inputs.view(),
            None,
            &options,
            &mut progress.stages(),
        )?;
        Ok((sel, backend.name()))
    })?;
    let secs = start.elapsed().as_secs_f64();
    let layout = problem.layout();
    outln!(
        "demo layer: inputs {:?}, consumer weight {:?} (stride 1, padding 1), backend {backend_name}",
        inputs.shape, weight.shape,
    );
    outln!("greedy error curve (normalized ‖AW − B_S W~‖² / ‖AW‖²):");
    for k in [
        1,
        layout.channels / 8,
        layout.channels / 4,
        layout.channels / 2,
        layout.channels,
    ] {
        let k = k.max(1);
        outln!(
            "  keep {k:>3} of {}: {:.4e}",
            layout.channels,
            sel.run.error_curve[k - 1]
        );
    }
    outln!(
        "kept {} channels: {:?}\nrelative error {:.4e}, in {:.3} s",
        sel.kept.len(),
        sel.kept,
        sel.relative_error,
        secs
    );
    Ok(())
}
