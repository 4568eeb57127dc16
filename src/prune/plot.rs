//! Plots as SVG, drawn with `plotters` (its SVG backend writes `<text>` elements; a viewer
//! supplies the font): the pieces every plot shares ([`Plot`], the palette, the legend placed
//! beside the panels, never over them) and `prune --plot` ([`prune_plot`]: each layer's greedy
//! error curve with the kept size marked, and the parameters of each layer before and after).
//! The comparison's plot is in `compare/output.rs`.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::PruneReport;
use crate::error::{Error, Result};

/// Ten colours told apart by people with the common colour-vision deficiencies as well as
/// anyone can with ten (matplotlib's `tab10`).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];

/// The grey of reference lines (the unpruned model) and of "before" bars.
pub const GREY: RGBColor = RGBColor(150, 150, 150);

/// The light grid lines.
pub const LIGHT: RGBColor = RGBColor(244, 244, 244);

/// Font size of labels and the legend, in plotters' units (the SVG gets `size / 1.24` px).
pub const FONT: f64 = 16.0;

/// A rectangle in the SVG's pixels: left, top, width, height.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Rect {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl Rect {
    pub(crate) fn of(area: (std::ops::Range<i32>, std::ops::Range<i32>)) -> Self {
        let (xs, ys) = area;
        Self {
            x: xs.start as f64,
            y: ys.start as f64,
            w: (xs.end - xs.start) as f64,
            h: (ys.end - ys.start) as f64,
        }
    }

    /// Whether the two rectangles share any area.
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }
}

/// How one series is drawn, and the values it was drawn from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Drawn {
    /// Its legend text.
    pub label: String,
    /// `#RRGGBB`, as in the SVG.
    pub colour: String,
    /// Dashed (e.g. no reweighting) rather than solid.
    pub dashed: bool,
    /// Index of the panel it is in.
    pub panel: usize,
    /// The data points `(x, y)`, in the panel's units.
    pub points: Vec<(f64, f64)>,
}

/// An SVG plot with where its parts are, for checks and for callers that place it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plot {
    /// The SVG document.
    pub svg: String,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
    /// The plotting area of each panel (inside the axes).
    pub panels: Vec<Rect>,
    /// The legend's box (outside every panel), if there is one.
    pub legend: Option<Rect>,
    /// Every series drawn, in drawing order.
    pub series: Vec<Drawn>,
}

/// One legend line: a colour drawn as a line (solid or dashed) or as a filled box.
pub(crate) struct Entry {
    pub label: String,
    pub colour: RGBColor,
    pub swatch: Swatch,
}

/// How a legend entry shows its series.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Swatch {
    Line,
    Dashed,
    Bar,
}

/// `#RRGGBB` of a colour, as plotters writes it.
pub(crate) fn hex(c: &RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// Drawing failures (none are expected when writing to a string) as the library's error.
pub(crate) fn drawing<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

const TITLE_H: u32 = 40;
const LEGEND_ROW: f64 = 20.0;
const LEGEND_PAD: f64 = 10.0;
const SWATCH: f64 = 28.0;

/// A generous width of `text` at plotters size `size` (wider than DejaVu Sans and Arial set it,
/// so that nothing drawn from the estimate is clipped).
pub(crate) fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size / 1.24 * 0.66
}

/// `(width, height)` of a legend of `entries`.
fn legend_size(entries: &[Entry]) -> (f64, f64) {
    let widest = entries
        .iter()
        .map(|e| text_width(&e.label, FONT))
        .fold(0.0, f64::max);
    (
        2.0 * LEGEND_PAD + SWATCH + 8.0 + widest,
        2.0 * LEGEND_PAD + LEGEND_ROW * entries.len() as f64,
    )
}

/// Draws the legend in `area` (its own column beside the panels), top-left at `(8, top)` of
/// the area; returns its box in the SVG's pixels.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[Entry],
    top: i32,
) -> Result<Rect> {
    let (w, h) = legend_size(entries);
    let (x0, y0) = (8, top);
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + w.ceil() as i32, y0 + h.ceil() as i32)],
        ShapeStyle::from(&RGBColor(200, 200, 200)).stroke_width(1),
    ))
    .map_err(drawing)?;
    for (i, e) in entries.iter().enumerate() {
        let y = y0 + (LEGEND_PAD + LEGEND_ROW * (i as f64 + 0.5)) as i32;
        let x = x0 + LEGEND_PAD as i32;
        let sw = SWATCH as i32;
        let style = ShapeStyle::from(&e.colour).stroke_width(2);
        match e.swatch {
            Swatch::Line => area.draw(&PathElement::new(vec![(x, y), (x + sw, y)], style)),
            Swatch::Dashed => (0..3).try_for_each(|k| {
                let a = x + k * 11;
                area.draw(&PathElement::new(vec![(a, y), (a + 6, y)], style))
            }),
            Swatch::Bar => area.draw(&Rectangle::new(
                [(x + 4, y - 6), (x + sw - 4, y + 6)],
                e.colour.filled(),
            )),
        }
        .map_err(drawing)?;
        let font = ("sans-serif", FONT).into_font().color(&BLACK).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Center,
            ),
        );
        area.draw(&Text::new(e.label.clone(), (x + sw + 8, y), font))
            .map_err(drawing)?;
    }
    let (ax, ay) = (
        area.get_base_pixel().0 as f64,
        area.get_base_pixel().1 as f64,
    );
    Ok(Rect {
        x: ax + x0 as f64,
        y: ay + y0 as f64,
        w,
        h,
    })
}

/// The SVG written into `buffer` by `draw` on a white `width × height` canvas.
fn render<T>(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<T>,
) -> Result<(String, T)> {
    let mut svg = String::new();
    let out = {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let out = draw(&root)?;
        root.present().map_err(drawing)?;
        out
    };
    Ok((svg, out))
}

/// A plot titled `title` with a `panels_w × panels_h` area of panels, filled by `draw` (which
/// returns the panels' plotting areas and the series drawn), and the legend of `entries` in a
/// column of its own to their right.
pub(crate) fn framed(
    title: &str,
    entries: &[Entry],
    (panels_w, panels_h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(Vec<Rect>, Vec<Drawn>)>,
) -> Result<Plot> {
    let (legend_w, legend_h) = legend_size(entries);
    let width = panels_w + legend_w.ceil() as u32 + 24;
    let height = TITLE_H + panels_h.max(legend_h.ceil() as u32 + 16);
    let (svg, (panels, series, legend)) = render(width, height, |root| {
        let body = root.titled(title, ("sans-serif", 20.0)).map_err(drawing)?;
        let (left, right) = body.split_horizontally(panels_w);
        let (left, _) = left.split_vertically(panels_h);
        let (panels, series) = draw(&left)?;
        let legend = draw_legend(&right, entries, 8)?;
        Ok((panels, series, legend))
    })?;
    Ok(Plot {
        svg,
        width,
        height,
        panels,
        legend: Some(legend),
        series,
    })
}

/// A panel's chart on `area`: its caption, margins and room for the axis labels.
pub(crate) fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", FONT))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56);
    builder
}

/// Draws the grid, axes and their labels of a panel: `descs` and `counts` (x, y), the tick
/// labels written by `x_text` and `y_text`.
pub(crate) fn mesh<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    descs: (&str, &str),
    counts: (usize, usize),
    x_text: &dyn Fn(&X::ValueType) -> String,
    y_text: &dyn Fn(&Y::ValueType) -> String,
) -> Result<()>
where
    X: Ranged + plotters::coord::ranged1d::ValueFormatter<X::ValueType>,
    Y: Ranged + plotters::coord::ranged1d::ValueFormatter<Y::ValueType>,
{
    chart
        .configure_mesh()
        .x_desc(descs.0)
        .y_desc(descs.1)
        .x_labels(counts.0)
        .y_labels(counts.1)
        .x_label_formatter(x_text)
        .y_label_formatter(y_text)
        .light_line_style(LIGHT)
        .label_style(("sans-serif", FONT))
        .draw()
        .map_err(drawing)
}

/// `lo..hi` padded by `share` of its span on each side (a span of 0 padded by `floor`).
pub(crate) fn padded(lo: f64, hi: f64, share: f64, floor: f64) -> std::ops::Range<f64> {
    let pad = ((hi - lo) * share).max(floor);
    lo - pad..hi + pad
}

const PANEL_W: u32 = 380;
const PANEL_H: u32 = 280;
const BARS_H: u32 = 320;

/// `prune --plot`: one panel per pruned layer with its greedy error curve (relative error
/// against the channels kept, `error_curve`) and the kept size marked, and below them a bar
/// chart of each layer's parameters (producer and consumers) before and after.
pub fn prune_plot(report: &PruneReport, title: &str) -> Result<Plot> {
    let layers = &report.layers;
    let cols = layers.len().clamp(1, 3);
    let rows = layers.len().div_ceil(cols).max(1);
    let entries = vec![
        Entry {
            label: "greedy error curve".into(),
            colour: PALETTE[0],
            swatch: Swatch::Line,
        },
        Entry {
            label: "kept size (its error)".into(),
            colour: PALETTE[1],
            swatch: Swatch::Dashed,
        },
        Entry {
            label: "parameters before".into(),
            colour: GREY,
            swatch: Swatch::Bar,
        },
        Entry {
            label: "parameters after".into(),
            colour: PALETTE[0],
            swatch: Swatch::Bar,
        },
    ];
    let size = (PANEL_W * cols as u32, PANEL_H * rows as u32 + BARS_H);
    framed(title, &entries, size, |area| {
        let (curves, bars) = area.split_vertically(PANEL_H * rows as u32);
        let mut panels = Vec::new();
        let mut series = Vec::new();
        let areas = curves.split_evenly((rows, cols));
        for (i, (l, area)) in layers.iter().zip(areas).enumerate() {
            let (rect, drawn) = error_panel(&area, l, i)?;
            panels.push(rect);
            series.extend(drawn);
        }
        let (rect, drawn) = parameter_bars(&bars, report, panels.len())?;
        panels.push(rect);
        series.extend(drawn);
        Ok((panels, series))
    })
}

/// One layer's error curve (or, for a method without one, its kept size and error alone).
fn error_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    layer: &super::report::LayerReport,
    index: usize,
) -> Result<(Rect, Vec<Drawn>)> {
    let curve: Vec<(f64, f64)> = layer
        .error_curve
        .iter()
        .enumerate()
        .map(|(k, &e)| ((k + 1) as f64, e))
        .collect();
    let kept = layer.channels_after as f64;
    let kept_error = layer
        .error_curve
        .get(layer.channels_after.wrapping_sub(1))
        .copied()
        .unwrap_or(layer.relative_error);
    let top = curve.iter().map(|p| p.1).fold(kept_error, f64::max);
    let x_range = 0.0..(layer.channels_before.max(1) as f64 + 0.5);
    let y_range = 0.0..(top * 1.05).max(1e-9);
    let caption = format!(
        "{} ({} → {}, error {})",
        layer.name,
        layer.channels_before,
        layer.channels_after,
        if kept_error > 0.0 && kept_error < 1e-3 {
            format!("{kept_error:.1e}")
        } else {
            format!("{kept_error:.4}")
        }
    );
    let mut chart = panel(area, &caption)
        .build_cartesian_2d(x_range, y_range.clone())
        .map_err(drawing)?;
    mesh(
        &mut chart,
        ("channels kept", "relative error"),
        (6, 5),
        &|x| format!("{x:.0}"),
        &|y| format!("{y:.2}"),
    )?;
    let curve_style = ShapeStyle::from(&PALETTE[0]).stroke_width(2);
    chart
        .draw_series(LineSeries::new(curve.clone(), curve_style))
        .map_err(drawing)?;
    let mark_style = ShapeStyle::from(&PALETTE[1]).stroke_width(2);
    let mark = vec![(kept, 0.0), (kept, y_range.end)];
    chart
        .draw_series(DashedLineSeries::new(mark, 6, 4, mark_style))
        .map_err(drawing)?;
    chart
        .draw_series(std::iter::once(Circle::new(
            (kept, kept_error),
            4,
            PALETTE[1].filled(),
        )))
        .map_err(drawing)?;
    let mut drawn = Vec::new();
    if !curve.is_empty() {
        drawn.push(Drawn {
            label: format!("{} error curve", layer.name),
            colour: hex(&PALETTE[0]),
            dashed: false,
            panel: index,
            points: curve,
        });
    }
    drawn.push(Drawn {
        label: format!("{} kept", layer.name),
        colour: hex(&PALETTE[1]),
        dashed: true,
        panel: index,
        points: vec![(kept, kept_error)],
    });
    Ok((Rect::of(chart.plotting_area().get_pixel_range()), drawn))
}

/// Parameters of each layer's producer and consumers, before (grey) and after (blue).
fn parameter_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &PruneReport,
    panel: usize,
) -> Result<(Rect, Vec<Drawn>)> {
    let layers = &report.layers;
    let n = layers.len().max(1) as f64;
    // Log scale: a layer's parameters span orders of magnitude (a first conv against a
    // classifier's input layer), and a linear axis would hide the small ones.
    let counts = layers
        .iter()
        .flat_map(|l| [l.parameters_before, l.parameters_after])
        .filter(|&c| c > 0);
    let (lo, hi) = counts.fold((usize::MAX, 1), |(a, b), c| (a.min(c), b.max(c)));
    let lo = 10f64.powf((lo.min(hi) as f64 / 2.0).max(1.0).log10().floor());
    let hi = hi as f64 * 4.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "parameters per layer (producer and consumers; log scale)",
            ("sans-serif", FONT),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..n, (lo..hi).log_scale())
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(LIGHT)
        .label_style(("sans-serif", FONT))
        .draw()
        .map_err(drawing)?;
    let mut before = Vec::new();
    let mut after = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let x = i as f64;
        let (b, a) = (l.parameters_before as f64, l.parameters_after as f64);
        before.push((x + 0.5, b));
        after.push((x + 0.5, a));
        chart
            .draw_series([
                Rectangle::new([(x + 0.12, lo), (x + 0.5, b.max(lo))], GREY.filled()),
                Rectangle::new([(x + 0.5, lo), (x + 0.88, a.max(lo))], PALETTE[0].filled()),
            ])
            .map_err(drawing)?;
        let centred = |size: f64| {
            ("sans-serif", size).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Bottom,
                ),
            )
        };
        let label = format!("{} → {}", l.parameters_before, l.parameters_after);
        let name_font = centred(FONT).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
        chart
            .draw_series([
                Text::new(label, (x + 0.5, b.max(a) * 1.15), centred(FONT)),
                Text::new(l.name.clone(), (x + 0.5, lo), name_font),
            ])
            .map_err(drawing)?;
    }
    let drawn = vec![
        Drawn {
            label: "parameters before".into(),
            colour: hex(&GREY),
            dashed: false,
            panel,
            points: before,
        },
        Drawn {
            label: "parameters after".into(),
            colour: hex(&PALETTE[0]),
            dashed: false,
            panel,
            points: after,
        },
    ];
    Ok((Rect::of(chart.plotting_area().get_pixel_range()), drawn))
}
