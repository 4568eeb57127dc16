//! The comparison's outputs: the rows as CSV ([`to_csv`]), grouped by method, reweighting and
//! budget and averaged over seeds ([`series`]), and drawn as an SVG plot of top-1 against the
//! achieved compression ([`compare_plot`], with plotters).

use plotters::prelude::*;

use super::{CompareRow, Comparison};
use crate::error::{Error, Result};
use crate::prune::budget::Allocation;
use crate::prune::plot::{
    drawing, framed, hex, mesh, padded, panel, Drawn, Entry, Plot, Rect, Swatch, GREY, PALETTE,
};

const PANEL_W: u32 = 440;
const PANEL_H: u32 = 400;

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

/// The comparison's plot: top-1 against the achieved compression (log scale), one panel per
/// budget allocation, one colour per method, solid with least-squares reweighting and dashed
/// without, mean over seeds, the unpruned top-1 as a grey dotted line; the legend in its own
/// column beside the panels; both axes limited to the data.
pub fn compare_plot(comparison: &Comparison, title: &str) -> Result<Plot> {
    let series = series(&comparison.rows);
    let mut budgets: Vec<Allocation> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for s in &series {
        if !budgets.contains(&s.budget) {
            budgets.push(s.budget);
        }
        if !methods.contains(&s.method.as_str()) {
            methods.push(&s.method);
        }
    }
    if methods.len() > PALETTE.len() {
        return Err(Error::Plot(format!(
            "{} methods, more than the {} colours of the palette",
            methods.len(),
            PALETTE.len()
        )));
    }
    let colour = |m: &str| PALETTE[methods.iter().position(|x| *x == m).unwrap_or(0)];
    let label = |s: &Series| format!("{}{}", s.method, if s.reweight { " + LS" } else { "" });
    // One legend line per method and reweighting, in first-seen order, then the baseline.
    let mut entries: Vec<Entry> = Vec::new();
    for s in &series {
        if !entries.iter().any(|e| e.label == label(s)) {
            entries.push(Entry {
                label: label(s),
                colour: colour(&s.method),
                swatch: if s.reweight {
                    Swatch::Line
                } else {
                    Swatch::Dashed
                },
            });
        }
    }
    entries.push(Entry {
        label: format!("unpruned ({:.4})", comparison.baseline_top1),
        colour: GREY,
        swatch: Swatch::Dashed,
    });
    let achieved = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (xlo, xhi) = achieved
        .filter(|x| *x > 0.0)
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xlo, xhi) = if xlo > xhi { (1.0, 2.0) } else { (xlo, xhi) };
    let tops = series.iter().flat_map(|s| s.points.iter().map(|p| p.2));
    let (ylo, yhi) = tops
        .chain([comparison.baseline_top1])
        .fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let y_range = padded(ylo, yhi, 0.04, 0.005);
    let (x_lo, x_hi) = (xlo / 1.08, xhi * 1.08);
    // Ticks at the powers of two in range (the compressions people ask for).
    let ticks: Vec<f64> = (x_lo.log2().ceil() as i32..=x_hi.log2().floor() as i32)
        .map(|e| 2f64.powi(e))
        .collect();
    let x_axis = || LogCoord::from((x_lo..x_hi).log_scale()).with_key_points(ticks.clone());
    let size = (PANEL_W * budgets.len().max(1) as u32, PANEL_H);
    framed(title, &entries, size, |area| {
        let mut panels = Vec::new();
        let mut drawn = Vec::new();
        for (b, area) in budgets
            .iter()
            .zip(area.split_evenly((1, budgets.len().max(1))))
        {
            let mut chart = panel(&area, &format!("budget: {b}"))
                .build_cartesian_2d(x_axis(), y_range.clone())
                .map_err(drawing)?;
            mesh(
                &mut chart,
                (
                    "compression (parameters before / after)",
                    "top-1 (no fine-tuning)",
                ),
                (8, 6),
                &|x| format!("{x:.0}×"),
                &|y| format!("{y:.2}"),
            )?;
            let base = vec![
                (x_lo, comparison.baseline_top1),
                (x_hi, comparison.baseline_top1),
            ];
            chart
                .draw_series(DashedLineSeries::new(base, 2, 4, GREY.stroke_width(1)))
                .map_err(drawing)?;
            for s in series.iter().filter(|s| s.budget == *b) {
                let c = colour(&s.method);
                let points: Vec<(f64, f64)> = s.points.iter().map(|p| (p.1, p.2)).collect();
                let style = ShapeStyle::from(&c).stroke_width(2);
                if s.reweight {
                    chart.draw_series(LineSeries::new(points.clone(), style))
                } else {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 7, 5, style))
                }
                .map_err(drawing)?;
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(drawing)?;
                drawn.push(Drawn {
                    label: label(s),
                    colour: hex(&c),
                    dashed: !s.reweight,
                    panel: panels.len(),
                    points,
                });
            }
            panels.push(Rect::of(chart.plotting_area().get_pixel_range()));
        }
        Ok((panels, drawn))
    })
}

/// The SVG of [`compare_plot`].
pub fn to_svg(comparison: &Comparison, title: &str) -> Result<String> {
    Ok(compare_plot(comparison, title)?.svg)
}
