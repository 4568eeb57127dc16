//! The plots (`compare`'s and `prune --plot`'s), rendered to PNG with resvg (the system's
//! fonts): every text inside the image, the legend beside the panels and never over them, each
//! series told apart by colour and dash, and the numbers drawn those of the results.
//!
//! `SUBPRUNE_WRITE_PLOTS=1 cargo test --test plots` also writes the README's images
//! (`docs/resnet56_compare.png`, `docs/mnist_prune_plot.png`) and `eval/resnet56_compare.svg`.

mod common;

use std::path::Path;

use common::*;
use resvg::{tiny_skia, usvg};
use subprune::prune::budget::Allocation;
use subprune::prune::compare::{compare_plot, series, CompareRow, Comparison};
use subprune::prune::plot::{Plot, Rect};

/// Texts of the rendered SVG with their boxes (in the SVG's pixels).
fn texts(group: &usvg::Group, out: &mut Vec<(String, usvg::Rect)>) {
    for node in group.children() {
        match node {
            usvg::Node::Group(g) => texts(g, out),
            usvg::Node::Text(t) => {
                let s: String = t.chunks().iter().map(|c| c.text()).collect();
                out.push((s.trim().to_string(), t.abs_bounding_box()));
            }
            _ => {}
        }
    }
}

fn inside(r: &usvg::Rect, outer: &Rect, slack: f32) -> bool {
    let (x, y, w, h) = (
        outer.x as f32,
        outer.y as f32,
        outer.w as f32,
        outer.h as f32,
    );
    r.left() >= x - slack
        && r.top() >= y - slack
        && r.right() <= x + w + slack
        && r.bottom() <= y + h + slack
}

/// Renders `plot`, checks its layout, returns the PNG.
fn render_and_check(plot: &Plot, what: &str, legend_lines: usize) -> Vec<u8> {
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    options.fontdb_mut().set_sans_serif_family("DejaVu Sans");
    let tree = usvg::Tree::from_str(&plot.svg, &options).unwrap();
    assert_eq!(
        (tree.size().width(), tree.size().height()),
        (plot.width as f32, plot.height as f32)
    );
    let mut found = Vec::new();
    texts(tree.root(), &mut found);
    assert!(found.len() > 10, "{what}: texts rendered: {found:?}");
    let image = Rect {
        x: 0.0,
        y: 0.0,
        w: plot.width as f64,
        h: plot.height as f64,
    };
    for (text, bbox) in &found {
        assert!(
            inside(bbox, &image, 0.5),
            "{what}: {text:?} at {bbox:?} leaves the image"
        );
    }
    let legend = plot.legend.expect("a legend");
    assert!(inside(
        &usvg::Rect::from_xywh(
            legend.x as f32,
            legend.y as f32,
            legend.w as f32,
            legend.h as f32
        )
        .unwrap(),
        &image,
        0.0
    ));
    for (i, panel) in plot.panels.iter().enumerate() {
        assert!(
            !legend.overlaps(panel),
            "{what}: the legend overlaps panel {i}"
        );
    }
    // Every legend text fully inside the legend box (not clipped, not spilling into a panel).
    let in_legend: Vec<&(String, usvg::Rect)> = found
        .iter()
        .filter(|(_, b)| {
            let (cx, cy) = (
                (b.left() + b.right()) as f64 / 2.0,
                (b.top() + b.bottom()) as f64 / 2.0,
            );
            cx > legend.x && cx < legend.x + legend.w && cy > legend.y && cy < legend.y + legend.h
        })
        .collect();
    assert_eq!(
        in_legend.len(),
        legend_lines,
        "{what}: legend texts {in_legend:?}"
    );
    for (text, bbox) in in_legend {
        assert!(
            inside(bbox, &legend, 0.5),
            "{what}: legend text {text:?} at {bbox:?} spills"
        );
    }
    // Series in one panel: no two of the same colour and dash.
    for (i, a) in plot.series.iter().enumerate() {
        for b in &plot.series[i + 1..] {
            assert!(
                a.panel != b.panel || (&a.colour, a.dashed) != (&b.colour, b.dashed),
                "{what}: {} and {} look alike",
                a.label,
                b.label
            );
        }
        assert!(
            plot.svg.contains(&a.colour),
            "{what}: colour of {}",
            a.label
        );
    }
    let mut pixmap = tiny_skia::Pixmap::new(plot.width, plot.height).unwrap();
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    // The legend has ink.
    let ink = (legend.y as u32 + 2..(legend.y + legend.h) as u32 - 2)
        .flat_map(|y| (legend.x as u32 + 2..(legend.x + legend.w) as u32 - 2).map(move |x| (x, y)))
        .filter(|&(x, y)| pixmap.pixel(x, y).is_some_and(|p| p.red() < 200))
        .count();
    assert!(ink > 100, "{what}: the legend is blank ({ink} dark pixels)");
    pixmap.encode_png().unwrap()
}

/// `(x, y)` pixel points of each `<polyline>` of colour `colour`.
fn polylines(svg: &str, colour: &str) -> Vec<Vec<(f64, f64)>> {
    svg.lines()
        .filter(|l| l.starts_with("<polyline") && l.contains(&format!("stroke=\"{colour}\"")))
        .map(|l| {
            let points = l
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            points
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

/// The drawn pixels are an affine image of the data (increasing x, decreasing y), within a
/// pixel (plotters rounds to whole pixels).
fn assert_affine(data: &[(f64, f64)], pixels: &[(f64, f64)], what: &str) {
    assert_eq!(data.len(), pixels.len(), "{what}");
    let (first, last) = (0, data.len() - 1);
    let sx = (pixels[last].0 - pixels[first].0) / (data[last].0 - data[first].0);
    // y: fit on the two points furthest apart in value.
    let (lo, hi) = (0..data.len()).fold((0, 0), |(a, b), i| {
        (
            if data[i].1 < data[a].1 { i } else { a },
            if data[i].1 > data[b].1 { i } else { b },
        )
    });
    let sy = (pixels[hi].1 - pixels[lo].1) / (data[hi].1 - data[lo].1);
    assert!(sx > 0.0 && sy < 0.0, "{what}: axes direction");
    for (d, p) in data.iter().zip(pixels) {
        let x = pixels[first].0 + sx * (d.0 - data[first].0);
        let y = pixels[lo].1 + sy * (d.1 - data[lo].1);
        assert!(
            (x - p.0).abs() <= 1.5 && (y - p.1).abs() <= 1.5,
            "{what}: {d:?} drawn at {p:?}, expected ({x}, {y})"
        );
    }
}

fn write_docs(name: &str, png: &[u8]) {
    if std::env::var("SUBPRUNE_WRITE_PLOTS").is_ok() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        std::fs::write(path, png).unwrap();
    }
}

/// The comparison recorded in `eval/resnet56_compare.csv` (the unpruned top-1 from the
/// fixtures' README: 789 / 846).
fn resnet56_comparison() -> Comparison {
    let csv = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/resnet56_compare.csv"),
    )
    .unwrap();
    let rows = csv
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            CompareRow {
                method: f[0].into(),
                reweight: f[1] == "true",
                seed: f[2].parse().ok(),
                budget: f[3].parse::<Allocation>().unwrap(),
                target: f[4].parse().unwrap(),
                parameters: f[5].parse().unwrap(),
                compression: f[6].parse().unwrap(),
                flops: f[7].parse().unwrap(),
                top1: f[8].parse().unwrap(),
                prune_seconds: f[9].parse().unwrap(),
                eval_seconds: f[10].parse().unwrap(),
            }
        })
        .collect();
    Comparison {
        baseline_top1: 789.0 / 846.0,
        parameters: 853_018,
        allocations: Vec::new(),
        stats_seconds: 0.0,
        greedy_seconds: 0.0,
        sensitivity: None,
        rows,
    }
}

#[test]
fn compare_plot_has_a_panel_per_budget_and_a_style_per_series() {
    let comparison = resnet56_comparison();
    let plot = compare_plot(&comparison, "ResNet-56 on CIFAR-10 (846 test images)").unwrap();
    assert_eq!(plot.panels.len(), 2, "uniform and error budgets");
    // 6 methods × with/without reweighting, in each of the 2 panels.
    assert_eq!(plot.series.len(), 24);
    let png = render_and_check(&plot, "compare", 12 + 1);
    // One colour per method in every panel; dashed exactly without reweighting.
    let all = series(&comparison.rows);
    for drawn in &plot.series {
        let s = all
            .iter()
            .find(|s| {
                let label = format!("{}{}", s.method, if s.reweight { " + LS" } else { "" });
                label == drawn.label
                    && plot.panels.len() > drawn.panel
                    && s.budget == [Allocation::Uniform, Allocation::Error][drawn.panel]
            })
            .unwrap_or_else(|| panic!("{} in panel {}", drawn.label, drawn.panel));
        assert_eq!(drawn.dashed, !s.reweight);
        let want: Vec<(f64, f64)> = s.points.iter().map(|p| (p.1, p.2)).collect();
        assert_eq!(drawn.points, want, "{}", drawn.label);
        let same_method = plot
            .series
            .iter()
            .filter(|o| o.label.split(' ').next() == drawn.label.split(' ').next());
        assert!(same_method.clone().all(|o| o.colour == drawn.colour));
        // A solid line is one polyline through its points (in log x, so check y only here).
        if !drawn.dashed {
            let lines = polylines(&plot.svg, &drawn.colour);
            let panel = plot.panels[drawn.panel];
            let line = lines
                .iter()
                .find(|l| {
                    l.len() == want.len()
                        && l.iter().all(|p| p.0 >= panel.x && p.0 <= panel.x + panel.w)
                })
                .unwrap_or_else(|| panic!("no polyline for {}", drawn.label));
            let logged: Vec<(f64, f64)> = want.iter().map(|p| (p.0.ln(), p.1)).collect();
            assert_affine(&logged, line, &drawn.label);
        }
    }
    write_docs("resnet56_compare.png", &png);
    if std::env::var("SUBPRUNE_WRITE_PLOTS").is_ok() {
        let eval = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/resnet56_compare.svg");
        std::fs::write(eval, &plot.svg).unwrap();
    }
}

#[test]
fn prune_plot_draws_the_reports_error_curves_and_parameters() {
    let dir = temp_dir("prune-plot");
    let svg = dir.join("p.svg");
    let calib = fixture("mnist_calib_512.npy");
    let extra = ["--calib-images", "256", "--keep-fraction", "0.25", "--plot"];
    let mut extra = extra.to_vec();
    extra.push(svg.to_str().unwrap());
    let report = prune_report(&dir, "m", calib.to_str().unwrap(), &extra);
    let layers = report["layers"].as_array().unwrap();
    // The parameters of conv1 and its consumer conv2 by hand: 32·1·3·3 + 32 and 64·32·3·3 + 64
    // before; 8·9 + 8 and 16·8·9 + 16 after keeping a quarter of each.
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[0]["parameters_before"], 320 + 18496);
    assert_eq!(layers[0]["parameters_after"], 80 + 1168);
    let text = std::fs::read_to_string(&svg).unwrap();
    // The library's plot of the same report: what the CLI wrote, with its layout.
    let pruned: subprune::prune::PruneReport = {
        // Rebuild the plot from the library to get its layout: the report's fields it reads.
        let layer = |l: &serde_json::Value| subprune::prune::report::LayerReport {
            name: l["name"].as_str().unwrap().into(),
            op: l["op"].as_str().unwrap().into(),
            consumers: serde_json::from_value(l["consumers"].clone()).unwrap(),
            channels_before: l["channels_before"].as_u64().unwrap() as usize,
            channels_after: l["channels_after"].as_u64().unwrap() as usize,
            relative_error: l["relative_error"].as_f64().unwrap(),
            error_curve: serde_json::from_value(l["error_curve"].clone()).unwrap(),
            order: serde_json::from_value(l["order"].clone()).unwrap(),
            kept: serde_json::from_value(l["kept"].clone()).unwrap(),
            rows: 0,
            columns: 0,
            rank_deficient: false,
            zero_gain_from: None,
            seconds: 0.0,
            parameters_before: l["parameters_before"].as_u64().unwrap() as usize,
            parameters_after: l["parameters_after"].as_u64().unwrap() as usize,
        };
        let mut base = minimal_report();
        base.layers = layers.iter().map(layer).collect();
        base.images = 256;
        base
    };
    let plot = subprune::prune::plot::prune_plot(
        &pruned,
        "mnist_cnn.onnx: asym greedy, 256 calibration images",
    )
    .unwrap();
    assert_eq!(
        plot.svg, text,
        "the CLI's SVG is the library's plot of its report"
    );
    assert_eq!(plot.panels.len(), layers.len() + 1);
    let png = render_and_check(&plot, "prune", 4);
    for (i, l) in layers.iter().enumerate() {
        let curve: Vec<f64> = serde_json::from_value(l["error_curve"].clone()).unwrap();
        let data: Vec<(f64, f64)> = curve
            .iter()
            .enumerate()
            .map(|(k, &e)| ((k + 1) as f64, e))
            .collect();
        let drawn = plot
            .series
            .iter()
            .find(|s| s.panel == i && !s.dashed)
            .unwrap();
        assert_eq!(drawn.points, data, "{}", l["name"]);
        let panel = plot.panels[i];
        let lines = polylines(&plot.svg, &drawn.colour);
        let line = lines
            .iter()
            .find(|p| {
                p.len() == data.len()
                    && p.iter().all(|q| {
                        q.0 >= panel.x
                            && q.0 <= panel.x + panel.w
                            && q.1 >= panel.y - 1.0
                            && q.1 <= panel.y + panel.h + 1.0
                    })
            })
            .unwrap_or_else(|| panic!("no curve polyline in panel {i}"));
        assert_affine(&data, line, l["name"].as_str().unwrap());
        let kept = plot
            .series
            .iter()
            .find(|s| s.panel == i && s.dashed)
            .unwrap();
        let k = l["channels_after"].as_u64().unwrap() as usize;
        assert_eq!(kept.points, vec![(k as f64, curve[k - 1])]);
    }
    let bars = plot
        .series
        .iter()
        .filter(|s| s.panel == layers.len())
        .collect::<Vec<_>>();
    let want = |key: &str| {
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| (i as f64 + 0.5, l[key].as_u64().unwrap() as f64))
            .collect::<Vec<_>>()
    };
    assert_eq!(bars[0].points, want("parameters_before"));
    assert_eq!(bars[1].points, want("parameters_after"));
    // The grey bars (before) drawn at heights affine in log(parameters), left to right.
    let chart = plot.panels[layers.len()];
    let grey: Vec<(f64, f64)> = plot
        .svg
        .lines()
        .filter(|l| l.starts_with("<rect") && l.contains(&format!("fill=\"{}\"", bars[0].colour)))
        .map(|l| {
            let attr = |name: &str| -> f64 {
                l.split(&format!(" {name}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (attr("x"), attr("y"))
        })
        .filter(|&(x, y)| {
            x >= chart.x && x <= chart.x + chart.w && y >= chart.y && y <= chart.y + chart.h
        })
        .collect();
    let logged: Vec<(f64, f64)> = bars[0].points.iter().map(|p| (p.0, p.1.ln())).collect();
    assert_affine(&logged, &grey, "bars before");
    write_docs("mnist_prune_plot.png", &png);
}

/// A report with no layers, to fill in.
fn minimal_report() -> subprune::prune::PruneReport {
    subprune::prune::PruneReport {
        variant: subprune::prune::Variant::Asym,
        method: subprune::prune::select::Method::Greedy,
        reweight: true,
        ridge: 0.0,
        images: 0,
        backend: String::new(),
        executor: String::new(),
        layers: Vec::new(),
        left_whole: Vec::new(),
        parameters_before: 0,
        parameters_after: 0,
        flops_before: 0,
        flops_after: 0,
        phases: Default::default(),
        memory_peak_bytes: 0,
        seconds: 0.0,
    }
}
