//! The comparison's outputs: the rows as CSV ([`to_csv`]), grouped by method, reweighting and
//! budget and averaged over seeds ([`series`]), and drawn as an SVG plot of top-1 against the
//! achieved compression ([`to_svg`]).

use super::{CompareRow, Comparison};
use crate::prune::budget::Allocation;

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
