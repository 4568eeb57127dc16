//! The paper's comparison (`docs/ALGORITHM.md` §5–7): every selection method × compression ×
//! reweighting, top-1 on a labelled test set straight after pruning (no fine-tuning).
//!
//! Work is shared: the statistics of every layer on the original network come from one forward
//! pass ([`crate::prune::layerwise`]); each layer's greedy runs once for all compressions; the
//! per-layer sizes of each compression are computed once per allocation (`uniform`, `error`,
//! `accuracy`: [`crate::prune::budget`]) and used by every method, so methods differ only in
//! which channels they keep, and allocations only in the sizes. The layer-wise
//! methods (`greedy`, the baselines) all use these original-network statistics, as the paper's
//! layer-wise baselines do. The paper's best variant, greedy on the pruned network with the
//! original network's targets (`greedy-asym`), needs statistics that depend on the earlier
//! layers' choices, so it runs the sequential pipeline once per compression and reweighting.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::exec::eval::evaluate;
use crate::exec::run::ImageSource;
use crate::ir::Graph;
use crate::onnx::OnnxModel;
use crate::prune::budget::{self, Allocation, CostModel, Target};
use crate::prune::layerwise::layerwise_stats;
use crate::prune::select::greedy::Greedy;
use crate::prune::select::greedy_tail::GreedyTail;
use crate::prune::select::{Method, Selector};
use crate::prune::sensitivity::{self, Sensitivity, Validation};
use crate::prune::{prune_with, ExecutorFactory, PruneOptions, Variant};
use crate::Backend;

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Layer-wise methods.
    pub methods: Vec<Method>,
    /// Also run the greedy in the asymmetric sequential variant (`greedy-asym`).
    pub asym: bool,
    /// Compression ratios of the parameter count (each > 1).
    pub compressions: Vec<f64>,
    /// Seeds `0..seeds` for the random methods (≥ 1).
    pub seeds: u64,
    /// How each compression is split over layers: every method runs with each (distinct).
    pub allocations: Vec<Allocation>,
    /// Ridge, tolerance, batch size, skipped layers (variant, method, keep are ignored).
    pub prune: PruneOptions,
    /// Test images per evaluation batch.
    pub eval_batch: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            methods: Method::BASELINES.to_vec(),
            asym: true,
            compressions: vec![2.0, 4.0, 8.0, 16.0, 32.0],
            seeds: 3,
            allocations: vec![Allocation::Uniform],
            prune: PruneOptions::default(),
            eval_batch: 256,
        }
    }
}

impl CompareOptions {
    /// The seeds a method runs with: `0..seeds` for a random method, none for the others.
    fn seeds_of(&self, method: Method) -> Vec<Option<u64>> {
        if method.is_random() {
            (0..self.seeds).map(Some).collect()
        } else {
            vec![None]
        }
    }

    /// The number of rows [`compare`] gives (and reports one by one as [`CompareEvent::Row`]):
    /// for each budget allocation and compression, one per method, seed and reweighting, and
    /// one per reweighting for `greedy-asym`.
    pub fn row_count(&self) -> usize {
        let runs: usize = self
            .methods
            .iter()
            .map(|&m| self.seeds_of(m).len())
            .sum::<usize>()
            + usize::from(self.asym);
        self.allocations.len() * self.compressions.len() * runs * REWEIGHTS.len()
    }
}

/// Every pruned model is evaluated with and without the least-squares reweighting.
const REWEIGHTS: [bool; 2] = [true, false];

/// `(producer name, channels, kept)`.
pub type LayerSize = (String, usize, usize);

/// One pruned model and its accuracy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareRow {
    /// `greedy`, `random`, …, or `greedy-asym`.
    pub method: String,
    /// Whether the consumers were reweighted by least squares.
    pub reweight: bool,
    /// Seed (random methods only).
    pub seed: Option<u64>,
    /// How the compression was split over layers.
    pub budget: Allocation,
    /// The compression asked for.
    pub target: f64,
    /// Parameters of the pruned model.
    pub parameters: usize,
    /// Parameters before / after.
    pub compression: f64,
    /// FLOPs per image of the pruned model (cost model).
    pub flops: f64,
    /// Top-1 accuracy on the test set.
    pub top1: f64,
    /// Seconds to select and rewrite (the asym variant: its whole pipeline).
    pub prune_seconds: f64,
    /// Seconds to evaluate.
    pub eval_seconds: f64,
}

/// The outcome of a comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    /// Top-1 of the unpruned model.
    pub baseline_top1: f64,
    /// Parameters of the unpruned model.
    pub parameters: usize,
    /// Per allocation and compression: the target and the kept channels of each layer.
    pub allocations: Vec<(Allocation, f64, Vec<LayerSize>)>,
    /// Seconds of the shared forward pass and statistics.
    pub stats_seconds: f64,
    /// Seconds of the greedy runs (once per layer).
    pub greedy_seconds: f64,
    /// The accuracy curves measured for [`Allocation::Accuracy`] (on the validation images).
    pub sensitivity: Option<Sensitivity>,
    /// The rows, in the order run.
    pub rows: Vec<CompareRow>,
}

/// What the comparison is doing, for progress displays.
#[derive(Clone, Debug)]
pub enum CompareEvent {
    /// The shared statistics: images done of total.
    Statistics(usize, usize),
    /// The accuracy budget's per-layer evaluations: done of total.
    Sensitivity(usize, usize),
    /// A row is done.
    Row(CompareRow),
}

fn check(options: &CompareOptions) -> Result<()> {
    if options.compressions.is_empty() {
        return Err(Error::InvalidArgument("no compression ratio given".into()));
    }
    if let Some(r) = options
        .compressions
        .iter()
        .find(|r| !(r.is_finite() && **r > 1.0))
    {
        return Err(Error::InvalidArgument(format!(
            "compression {r}: must be a finite ratio > 1"
        )));
    }
    if options.allocations.is_empty() {
        return Err(Error::InvalidArgument("no budget allocation given".into()));
    }
    if let Some((_, a)) = options
        .allocations
        .iter()
        .enumerate()
        .find(|(i, a)| options.allocations[..*i].contains(a))
    {
        return Err(Error::InvalidArgument(format!(
            "budget allocation '{a}' is given twice"
        )));
    }
    if options.methods.is_empty() && !options.asym {
        return Err(Error::InvalidArgument("no method to compare".into()));
    }
    if options.seeds == 0 {
        return Err(Error::InvalidArgument("seeds must be ≥ 1".into()));
    }
    if options.eval_batch == 0 {
        return Err(Error::InvalidArgument(
            "evaluation batch must be ≥ 1 image".into(),
        ));
    }
    Ok(())
}

/// Runs the comparison. `test` and `labels` are the labelled test set; `validation`, a
/// labelled held-out split for [`Allocation::Accuracy`] (required there, unused otherwise).
#[allow(clippy::too_many_arguments)]
pub fn compare(
    model: &OnnxModel,
    calib: &dyn ImageSource,
    test: &dyn ImageSource,
    labels: &[i64],
    validation: Option<Validation<'_>>,
    options: &CompareOptions,
    backend: &dyn Backend,
    executor: ExecutorFactory<'_>,
    progress: &mut dyn FnMut(CompareEvent),
) -> Result<Comparison> {
    check(options)?;
    let graph = &model.graph;
    if options.allocations.contains(&Allocation::Accuracy) {
        match &validation {
            Some(v) => sensitivity::check_validation(graph, v)?,
            None => {
                return Err(Error::InvalidArgument(
                    "the accuracy budget needs labelled validation images".into(),
                ))
            }
        }
    }
    let accuracy = |g: &Graph| -> Result<f64> {
        let exec = executor(g)?;
        let r = evaluate(
            exec.as_ref(),
            test,
            labels,
            options.eval_batch,
            &mut |_, _| {},
        )?;
        Ok(r.top1 as f64 / r.images.max(1) as f64)
    };
    let baseline_top1 = accuracy(graph)?;
    let ls = layerwise_stats(
        graph,
        calib,
        &options.prune,
        backend,
        executor,
        &mut |d, n| progress(CompareEvent::Statistics(d, n)),
    )?;
    let layers: Vec<_> = ls.layers.iter().map(|l| &l.layer).collect();
    let params = CostModel::parameters(graph, &layers);
    let flops = CostModel::flops(graph, &layers);
    let greedy = Greedy::default();
    // One greedy run per layer, when the greedy or the error allocation needs it.
    let t = Instant::now();
    let curves = if options
        .methods
        .iter()
        .any(|m| matches!(m, Method::Greedy | Method::GreedyTail))
        || options
            .allocations
            .iter()
            .any(|a| *a != Allocation::Uniform)
    {
        Some(ls.greedy_curves(backend, options.prune.dependence_tol, &greedy)?)
    } else {
        None
    };
    let greedy_seconds = t.elapsed().as_secs_f64();
    // The accuracy budget: every layer pruned alone (greedy, reweighted as options.prune says)
    // at a grid of sizes, measured on the validation images once for all compressions.
    let sensitivity = match validation {
        Some(v) if options.allocations.contains(&Allocation::Accuracy) => {
            Some(sensitivity::measure(
                graph,
                &ls,
                &greedy,
                v,
                &options.prune,
                backend,
                executor,
                &mut |d, n| progress(CompareEvent::Sensitivity(d, n)),
            )?)
        }
        _ => None,
    };
    let mut allocations = Vec::new();
    for &allocation in &options.allocations {
        for &r in &options.compressions {
            let a = match (&sensitivity, allocation) {
                (Some(s), Allocation::Accuracy) => {
                    budget::allocate_accuracy(&params, Target::Compression(r), s, curves.as_deref())
                }
                _ => budget::allocate(
                    &params,
                    Target::Compression(r),
                    allocation,
                    curves.as_deref(),
                ),
            }
            .map_err(|e| {
                Error::InvalidArgument(format!("{allocation} budget, compression {r}: {e}"))
            })?;
            let sizes: Vec<(String, usize, usize)> = ls
                .layers
                .iter()
                .zip(&a.keeps)
                .map(|(l, &k)| (l.layer.name.clone(), l.layer.channels, k))
                .collect();
            allocations.push((allocation, r, a.keeps, sizes));
        }
    }
    let parameters = graph.parameter_count();
    let mut rows = Vec::new();
    let mut record = |row: CompareRow, rows: &mut Vec<CompareRow>| {
        progress(CompareEvent::Row(row.clone()));
        rows.push(row);
    };
    for (allocation, r, keeps, sizes) in &allocations {
        for &method in &options.methods {
            for seed in options.seeds_of(method) {
                let fresh;
                let tail;
                let selector: &dyn Selector = match method {
                    Method::Greedy => &greedy,
                    Method::GreedyTail => {
                        tail = GreedyTail { greedy: &greedy };
                        &tail
                    }
                    m => {
                        fresh = m.selector(seed.unwrap_or(0));
                        fresh.as_ref()
                    }
                };
                for reweight in REWEIGHTS {
                    let t = Instant::now();
                    let opts = PruneOptions {
                        reweight,
                        ..options.prune.clone()
                    };
                    let (g, _) = ls.prune(graph, selector, keeps, &opts, backend)?;
                    let prune_seconds = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    let top1 = accuracy(&g)?;
                    let p = g.parameter_count();
                    record(
                        CompareRow {
                            method: method.name().into(),
                            reweight,
                            seed,
                            budget: *allocation,
                            target: *r,
                            parameters: p,
                            compression: parameters as f64 / p.max(1) as f64,
                            flops: flops.cost(keeps),
                            top1,
                            prune_seconds,
                            eval_seconds: t.elapsed().as_secs_f64(),
                        },
                        &mut rows,
                    );
                }
            }
        }
        if options.asym {
            for reweight in REWEIGHTS {
                let t = Instant::now();
                let opts = PruneOptions {
                    variant: Variant::Asym,
                    method: Method::Greedy,
                    reweight,
                    keep: sizes.iter().map(|(n, _, k)| (n.clone(), *k)).collect(),
                    ..options.prune.clone()
                };
                let pruned = prune_with(model, calib, &opts, backend, executor, &mut |_| {})?;
                let prune_seconds = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let top1 = accuracy(&pruned.model.graph)?;
                let p = pruned.report.parameters_after;
                record(
                    CompareRow {
                        method: "greedy-asym".into(),
                        reweight,
                        seed: None,
                        budget: *allocation,
                        target: *r,
                        parameters: p,
                        compression: parameters as f64 / p.max(1) as f64,
                        flops: flops.cost(keeps),
                        top1,
                        prune_seconds,
                        eval_seconds: t.elapsed().as_secs_f64(),
                    },
                    &mut rows,
                );
            }
        }
    }
    Ok(Comparison {
        baseline_top1,
        parameters,
        allocations: allocations
            .into_iter()
            .map(|(a, r, _, s)| (a, r, s))
            .collect(),
        stats_seconds: ls.seconds,
        greedy_seconds,
        sensitivity,
        rows,
    })
}

/// The rows as CSV (header first).
pub fn to_csv(rows: &[CompareRow]) -> String {
    let mut out = String::from(
        "method,reweight,seed,budget,target_compression,parameters,compression,flops,top1,prune_seconds,eval_seconds\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.4},{:.0},{:.6},{:.3},{:.3}\n",
            r.method,
            r.reweight,
            r.seed.map_or(String::new(), |s| s.to_string()),
            r.budget,
            r.target,
            r.parameters,
            r.compression,
            r.flops,
            r.top1,
            r.prune_seconds,
            r.eval_seconds
        ));
    }
    out
}

/// One line of the summary: a method with or without reweighting, under one budget allocation,
/// top-1 (mean over seeds and its spread) at each compression asked for.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Series {
    /// Method name.
    pub method: String,
    /// Reweighted.
    pub reweight: bool,
    /// The budget allocation.
    pub budget: Allocation,
    /// `(target compression, achieved compression, mean top-1, min, max, runs)`.
    pub points: Vec<(f64, f64, f64, f64, f64, usize)>,
}

/// Rows grouped by method, reweighting and budget allocation, averaged over seeds, in
/// first-seen order.
pub fn series(rows: &[CompareRow]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in rows {
        let i = match out
            .iter()
            .position(|s| s.method == r.method && s.reweight == r.reweight && s.budget == r.budget)
        {
            Some(i) => i,
            None => {
                out.push(Series {
                    method: r.method.clone(),
                    reweight: r.reweight,
                    budget: r.budget,
                    points: Vec::new(),
                });
                out.len() - 1
            }
        };
        let s = &mut out[i];
        match s.points.iter_mut().find(|p| p.0 == r.target) {
            Some(p) => {
                p.2 = (p.2 * p.5 as f64 + r.top1) / (p.5 + 1) as f64;
                p.3 = p.3.min(r.top1);
                p.4 = p.4.max(r.top1);
                p.5 += 1;
            }
            None => s
                .points
                .push((r.target, r.compression, r.top1, r.top1, r.top1, 1)),
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG plot of top-1 against achieved compression (log scale), one line per method and
/// reweighting (solid: reweighted, dashed: not), mean over seeds, with the unpruned top-1 as a
/// grey line.
pub fn to_svg(comparison: &Comparison, title: &str) -> String {
    const W: f64 = 760.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 220.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const COLORS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    let series = series(&comparison.rows);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|x| *x > 0.0)
        .collect();
    let (xmin, xmax) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| {
        (a.min(x.log2()), b.max(x.log2()))
    });
    let (xmin, xmax) = if xs.is_empty() {
        (0.0, 1.0)
    } else if xmax - xmin < 1e-9 {
        (xmin - 0.5, xmax + 0.5)
    } else {
        (xmin.floor(), xmax.ceil())
    };
    let ymin = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.2))
        .fold(comparison.baseline_top1, f64::min);
    let ymin = (ymin * 10.0).floor() / 10.0;
    let ymax = 1.0;
    let px = |x: f64| LEFT + (x.log2() - xmin) / (xmax - xmin) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (ymax - y) / (ymax - ymin).max(1e-9) * (H - TOP - BOTTOM);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        (W - RIGHT + LEFT) / 2.0,
        xml_escape(title)
    );
    // Axes, ticks at powers of two and tenths of accuracy.
    s.push_str(&format!(
        "<path d=\"M{LEFT} {TOP} V{} H{}\" stroke=\"black\" fill=\"none\"/>\n",
        H - BOTTOM,
        W - RIGHT
    ));
    let mut e = xmin as i64;
    while e as f64 <= xmax {
        let x = px(2f64.powi(e as i32));
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}×</text>\n",
            TOP,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            2f64.powi(e as i32)
        ));
        e += 1;
    }
    let mut t = ymin;
    while t <= ymax + 1e-9 {
        let y = py(t);
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t:.1}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        ));
        t += if ymax - ymin > 0.5 { 0.1 } else { 0.05 };
    }
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">compression (parameters before / after, log scale)</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">top-1 (no fine-tuning)</text>\n",
        (W - RIGHT + LEFT) / 2.0,
        H - 12.0,
        (H - BOTTOM + TOP) / 2.0,
        (H - BOTTOM + TOP) / 2.0
    ));
    let yb = py(comparison.baseline_top1);
    s.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{yb:.1}\" x2=\"{}\" y2=\"{yb:.1}\" stroke=\"#999\" stroke-dasharray=\"2 3\"/>\n",
        W - RIGHT
    ));
    let methods: Vec<(&str, Allocation)> = {
        let mut m: Vec<(&str, Allocation)> = Vec::new();
        for se in &series {
            if !m.contains(&(se.method.as_str(), se.budget)) {
                m.push((&se.method, se.budget));
            }
        }
        m
    };
    let several_budgets = series.iter().any(|se| se.budget != series[0].budget);
    for (i, se) in series.iter().enumerate() {
        let c = COLORS[methods
            .iter()
            .position(|m| *m == (se.method.as_str(), se.budget))
            .unwrap_or(0)
            % COLORS.len()];
        let dash = if se.reweight {
            ""
        } else {
            " stroke-dasharray=\"6 4\""
        };
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.1), py(p.2)))
            .collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash}/>\n",
            pts.join(" ")
        ));
        for p in &se.points {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                px(p.1),
                py(p.2)
            ));
        }
        let ly = TOP + 10.0 + 18.0 * i as f64;
        let lx = W - RIGHT + 15.0;
        s.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}{}{}</text>\n",
            lx + 28.0,
            lx + 34.0,
            ly + 4.0,
            xml_escape(&se.method),
            if se.reweight { " + LS" } else { "" },
            if several_budgets {
                format!(" ({})", se.budget)
            } else {
                String::new()
            }
        ));
    }
    s.push_str("</svg>\n");
    s
}
