//! The measurement behind `EVALUATION.md`'s "where greedy + LS is not the best on MNIST": which
//! layer's selection makes the reweighted greedy lose to the reweighted act-norm at 2×–8×.
//!
//! On the layer-wise statistics of the 512 calibration images, with the `uniform` sizes of each
//! compression, it prints each layer's rank deficiency and the greedy step from which every gain
//! is 0, then the test top-1 (all 10,000 MNIST test images, consumers reweighted) of every
//! assignment of {greedy, act-norm} to the three layers, and of `greedy→act-norm`: the greedy
//! order up to its first zero gain, the rest of the keep set by act-norm (`--method
//! greedy-tail`; the zero-gain tail is a tie the greedy breaks by the lowest index).
//!
//! Run from the repository root: `cargo run --release --example mnist_layer_methods`.

use std::path::Path;

use subprune::analysis::channels::analyze;
use subprune::exec::eval::evaluate;
use subprune::exec::run::{F32Images, U8Images};
use subprune::exec::CpuExecutor;
use subprune::prune::budget::{self, CostModel, Target};
use subprune::prune::layerwise::layerwise_stats;
use subprune::prune::select::greedy::Greedy;
use subprune::prune::select::greedy_tail::GreedyTail;
use subprune::prune::select::{LayerContext, Method, Selection, Selector};
use subprune::prune::{cpu_engines, PruneOptions};

/// A different selector for each layer, by producer name.
struct PerLayer<'a> {
    by_layer: Vec<(&'a str, &'a dyn Selector)>,
}

impl Selector for PerLayer<'_> {
    fn name(&self) -> String {
        "per-layer".into()
    }
    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> subprune::Result<Selection> {
        let s = self
            .by_layer
            .iter()
            .find(|(n, _)| *n == layer.name)
            .expect("every layer assigned")
            .1;
        s.select(layer, keep, progress)
    }
}

fn main() -> anyhow::Result<()> {
    let f = Path::new("tests/fixtures");
    let model = subprune::onnx::load(f.join("mnist_cnn.onnx"))?;
    let calib = F32Images::new(
        "calib",
        subprune::npy::read_f32(f.join("mnist_calib_512.npy"))?,
    )?;
    let (shape, data) = match subprune::npy::read_any(f.join("mnist_test_u8.npy"))? {
        subprune::npy::NpyArray::U8 { shape, data } => (shape, data),
        _ => anyhow::bail!("the MNIST test set is uint8"),
    };
    let test = U8Images::new(shape, data, &[0.1307], &[0.3081])?;
    let labels = subprune::npy::read_i64(f.join("mnist_test_labels.npy"))?.1;
    let (backend, factory) = cpu_engines();
    let options = PruneOptions::default();
    let ls = layerwise_stats(
        &model.graph,
        &calib,
        &options,
        &backend,
        &factory,
        &mut |_, _| {},
    )?;
    let greedy = Greedy::default();
    let act = Method::ActNorm.selector(0);
    let names: Vec<&str> = ls.layers.iter().map(|l| l.layer.name.as_str()).collect();
    for (i, l) in ls.layers.iter().enumerate() {
        let run = greedy.run(
            &ls.context(i, &backend, options.dependence_tol),
            &mut |_, _| {},
        )?;
        let st = &l.stats[0];
        println!(
            "{}: {} channels, consumer {} rows × {} columns, zero gain from step {:?}",
            l.layer.name,
            l.layer.channels,
            st.rows,
            st.layout.columns(),
            run.gains.iter().position(|&g| g <= 0.0).map(|z| z + 1)
        );
    }
    let analysis = analyze(&model.graph);
    let layers = budget::pruned_layers(&analysis, &[]);
    let params = CostModel::parameters(&model.graph, &layers);
    let top1 = |g: &subprune::ir::Graph| -> anyhow::Result<f64> {
        let r = evaluate(&CpuExecutor::new(g)?, &test, &labels, 256, &mut |_, _| {})?;
        Ok(r.correct_top1 as f64 / r.images as f64)
    };
    let tail = GreedyTail { greedy: &greedy };
    for r in [2.0, 4.0, 8.0, 16.0] {
        let a = budget::allocate(
            &params,
            Target::Compression(r),
            budget::Allocation::Uniform,
            None,
        )?;
        println!("{r}×: sizes {:?}", a.keeps);
        for mask in 0..(1 << names.len()) {
            let by_layer: Vec<(&str, &dyn Selector)> = names
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let s: &dyn Selector = if mask & (1 << i) != 0 {
                        act.as_ref()
                    } else {
                        &greedy
                    };
                    (n, s)
                })
                .collect();
            let label: Vec<&str> = (0..names.len())
                .map(|i| {
                    if mask & (1 << i) != 0 {
                        "act-norm"
                    } else {
                        "greedy"
                    }
                })
                .collect();
            let (g, _) = ls.prune(
                &model.graph,
                &PerLayer { by_layer },
                &a.keeps,
                &options,
                &backend,
            )?;
            println!("  {:<32} {:.4}", label.join(" / "), top1(&g)?);
        }
        let (g, _) = ls.prune(&model.graph, &tail, &a.keeps, &options, &backend)?;
        println!("  {:<32} {:.4}", "greedy→act-norm (every layer)", top1(&g)?);
    }
    Ok(())
}
