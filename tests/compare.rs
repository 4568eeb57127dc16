//! The comparison (`subprune::prune::compare`, `subprune compare`) on the MNIST fixture with small
//! calibration subsets: its CSV and SVG, every allocation with the sizes each rule gives on its
//! own (computed here independently), and the CLI's refusals of bad methods and compressions.

mod common;

use subprune::prune::budget::{self, Allocation, CostModel, Target};
use subprune::prune::compare::{compare, compare_plot, to_csv, CompareOptions};
use subprune::prune::select::{greedy::Greedy, Method};
use subprune::prune::{cpu_engines, PruneOptions};

use common::{
    fixture, mnist_calib, mnist_greedy_curves, mnist_layerwise, mnist_model, mnist_test_images,
};

#[test]
fn compare_writes_a_parseable_csv_and_an_svg() {
    let m = mnist_model();
    let (test, labels) = mnist_test_images(200, false);
    let (backend, factory) = cpu_engines();
    let options = CompareOptions {
        methods: vec![Method::WeightNorm, Method::Random],
        asym: false,
        compressions: vec![2.0, 8.0],
        seeds: 2,
        ..Default::default()
    };
    let result = compare(
        &m,
        &mnist_calib(32),
        &test,
        &labels,
        None,
        &options,
        &backend,
        &factory,
        &mut |_| {},
    )
    .unwrap();
    // (weight-norm + 2 random seeds) × 2 compressions × 2 reweightings.
    assert_eq!(result.rows.len(), 12);
    assert_eq!(options.row_count(), 12);
    let csv = to_csv(&result.rows);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), 11);
    let budget_col = header.iter().position(|h| *h == "budget").unwrap();
    let top1 = header.iter().position(|h| *h == "top1").unwrap();
    let comp = header.iter().position(|h| *h == "compression").unwrap();
    let mut n = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), header.len(), "{line}");
        let t: f64 = f[top1].parse().unwrap();
        assert!((0.0..=1.0).contains(&t));
        let c: f64 = f[comp].parse().unwrap();
        assert!(c >= 1.9, "{line}");
        assert_eq!(f[budget_col], "uniform", "{line}");
        n += 1;
    }
    assert_eq!(n, 12);
    // Reproducible: the unpruned accuracy is what evaluate gives on the same 200 images.
    assert!(result.baseline_top1 > 0.95);
    let plot = compare_plot(&result, "mnist <test>").unwrap();
    let svg = &plot.svg;
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("mnist &lt;test&gt;"), "{svg}");
    // One line per method × reweighting (their layout: tests/plots.rs).
    assert_eq!(plot.series.len(), 4);
    assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    // Bad options are refused before any work.
    for bad in [
        CompareOptions {
            compressions: vec![1.0],
            ..options.clone()
        },
        CompareOptions {
            seeds: 0,
            ..options.clone()
        },
        CompareOptions {
            methods: vec![],
            asym: false,
            ..options.clone()
        },
        CompareOptions {
            allocations: vec![],
            ..options.clone()
        },
        CompareOptions {
            allocations: vec![Allocation::Error, Allocation::Uniform, Allocation::Error],
            ..options.clone()
        },
        CompareOptions {
            allocations: vec![Allocation::Accuracy],
            ..options.clone()
        },
    ] {
        assert!(compare(
            &m,
            &mnist_calib(8),
            &test,
            &labels,
            None,
            &bad,
            &backend,
            &factory,
            &mut |_| {}
        )
        .is_err());
    }
}

#[test]
fn cli_rejects_unknown_method_and_bad_compression() {
    let dir = common::temp_dir("select-cli");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_subprune"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // Every refused command line: `base` then `extra`, and what its message must say.
    let refused = |base: &[&str], cases: &[(&[&str], &str)]| {
        for (extra, needle) in cases {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            let err = run(&args);
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
    };
    let m = fixture("mnist_cnn.onnx");
    let c = fixture("mnist_calib_512.npy");
    let o = dir.join("o.onnx");
    let (m, c, o) = (
        m.to_str().unwrap(),
        c.to_str().unwrap(),
        o.to_str().unwrap(),
    );
    refused(
        &["prune", m, "--calib", c, "--out", o],
        &[
            (&["--method", "magic"], "method 'magic'"),
            (&["--compression", "1"], "--compression 1"),
            (&["--compression", "4", "--budget", "accuracy"], "--val"),
            (&["--budget", "error"], "--budget splits"),
            (&["--target-flops=-5"], "--target-flops"),
            (&["--calib-images", "0"], "--calib-images must be ≥ 1"),
            (
                &["--calib-images", "513"],
                "mnist_calib_512.npy holds only 512 images",
            ),
        ],
    );
    // A valid limit: the report counts exactly those images.
    let report = dir.join("r.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_subprune"))
        .args(["--backend", "cpu", "prune", m, "--calib", c, "--out", o])
        .args(["--calib-images", "24", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["images"], 24, "{r}");
    std::fs::remove_file(dir.join("o.onnx")).unwrap();
    let t = fixture("mnist_test_u8.npy");
    let l = fixture("mnist_test_labels.npy");
    let (t, l) = (t.to_str().unwrap(), l.to_str().unwrap());
    let prefix = dir.join("cmp");
    let p = prefix.to_str().unwrap();
    let base = [
        "compare", m, "--calib", c, "--data", t, "--labels", l, "--out", p,
    ];
    refused(
        &base,
        &[
            (&["--compressions", "2,0.5"], "0.5"),
            (&["--methods", "greedy,bogus"], "bogus"),
            (&["--budget", "accuracy"], "--val"),
            (&["--limit", "0"], "--limit must be ≥ 1"),
            (
                &["--val", t, "--val-labels", l],
                "only used by --budget accuracy",
            ),
        ],
    );
    assert!(!dir.join("o.onnx").exists() && !dir.join("cmp.csv").exists());
}

#[test]
fn compare_runs_every_allocation_with_the_sizes_each_rule_gives() {
    let m = mnist_model();
    let (test, labels) = mnist_test_images(100, false);
    let (val, val_labels) = mnist_test_images(60, false);
    let (backend, factory) = cpu_engines();
    let options = CompareOptions {
        methods: vec![Method::WeightNorm],
        asym: false,
        compressions: vec![4.0],
        allocations: vec![Allocation::Uniform, Allocation::Error, Allocation::Accuracy],
        ..Default::default()
    };
    let cal = mnist_calib(64);
    let result = compare(
        &m,
        &cal,
        &test,
        &labels,
        Some(subprune::prune::sensitivity::Validation {
            images: &val,
            labels: &val_labels,
        }),
        &options,
        &backend,
        &factory,
        &mut |_| {},
    )
    .unwrap();
    // 3 allocations × 1 compression × 2 reweightings.
    assert_eq!(result.rows.len(), 6);
    assert_eq!(options.row_count(), 6);
    let budgets: Vec<Allocation> = result.allocations.iter().map(|a| a.0).collect();
    assert_eq!(budgets, options.allocations);
    // The sizes are what each rule gives on its own inputs, computed here independently of
    // compare: uniform from the cost model, error from the greedy curves of the same 64 images,
    // accuracy from curves measured again on the same validation images.
    let (_, ls) = mnist_layerwise();
    let layers: Vec<_> = ls.layers.iter().map(|l| &l.layer).collect();
    let params = CostModel::parameters(&m.graph, &layers);
    let uniform =
        budget::allocate(&params, Target::Compression(4.0), Allocation::Uniform, None).unwrap();
    let error = budget::allocate(
        &params,
        Target::Compression(4.0),
        Allocation::Error,
        Some(mnist_greedy_curves()),
    )
    .unwrap();
    let s = subprune::prune::sensitivity::measure(
        &m.graph,
        ls,
        &Greedy::default(),
        subprune::prune::sensitivity::Validation {
            images: &val,
            labels: &val_labels,
        },
        &PruneOptions::default(),
        &backend,
        &factory,
        &mut |_, _| {},
    )
    .unwrap();
    let accuracy = budget::allocate_accuracy(&params, Target::Compression(4.0), &s, None).unwrap();
    for ((a, _, sizes), expect) in
        result
            .allocations
            .iter()
            .zip([&uniform.keeps, &error.keeps, &accuracy.keeps])
    {
        let got: Vec<usize> = sizes.iter().map(|s| s.2).collect();
        assert_eq!(&got, expect, "{a}");
    }
    let csv = to_csv(&result.rows);
    for a in ["uniform", "error", "accuracy"] {
        assert_eq!(csv.matches(&format!(",{a},")).count(), 2, "{csv}");
    }
    let plot = compare_plot(&result, "budgets").unwrap();
    assert_eq!(plot.series.len(), 6);
    assert_eq!(plot.panels.len(), 3, "a panel per budget");
    assert!(plot.svg.contains("budget: accuracy") && plot.svg.contains("weight-norm + LS"));
    assert_eq!(
        result.sensitivity.as_ref().unwrap().evaluations,
        s.evaluations
    );
}
