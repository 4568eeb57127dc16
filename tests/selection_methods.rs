//! The selection methods (`subprune::prune::select`) on the MNIST fixture with small calibration
//! subsets, checked against direct computations: weight norms from the ONNX weight, activation
//! norms from the activations themselves, the greedy tail against its definition, the layerwise
//! greedy against the pipeline's layer variant.

mod common;

use subprune::layer::{ChannelLayout, LayerStats};
use subprune::prune::select::{greedy::Greedy, Method};
use subprune::prune::{prune, PruneOptions, Variant};
use subprune::CpuBackend;

use common::{mnist_calib, mnist_layerwise};

#[test]
fn greedy_tail_completes_the_informative_prefix_by_activation_hand_checked() {
    use subprune::layer::greedy::GreedyRun;
    use subprune::prune::select::greedy_tail::{complete_by_scores, informative_steps};
    let run = GreedyRun {
        order: vec![3, 1, 4, 0, 2],
        gains: vec![0.5, 0.2, 0.0, 0.0, 0.0],
        error_curve: vec![0.5, 0.3, 0.3, 0.3, 0.3],
        total: 1.0,
    };
    let scores = [5.0, 1.0, 9.0, 2.0, 0.0];
    assert_eq!(informative_steps(&run), 2);
    // Within the informative prefix: the greedy's picks.
    assert_eq!(complete_by_scores(&run, 1, &scores), vec![3]);
    assert_eq!(complete_by_scores(&run, 2, &scores), vec![1, 3]);
    // Past it: 3, 1, then the largest scores of {4, 0, 2}: 2 (9), then 0 (5); the greedy's index
    // order would have taken 4 first.
    assert_eq!(complete_by_scores(&run, 3, &scores), vec![1, 2, 3]);
    assert_eq!(complete_by_scores(&run, 4, &scores), vec![0, 1, 2, 3]);
    assert_eq!(complete_by_scores(&run, 5, &scores), vec![0, 1, 2, 3, 4]);
    // Ties in the tail: the lower index.
    assert_eq!(complete_by_scores(&run, 3, &[1.0; 5]), vec![0, 1, 3]);
    // No zero gain: exactly the greedy.
    let positive = GreedyRun {
        gains: vec![0.5, 0.2, 0.1, 0.05, 0.01],
        ..run.clone()
    };
    assert_eq!(informative_steps(&positive), 5);
    for k in 1..=5 {
        assert_eq!(complete_by_scores(&positive, k, &scores), positive.kept(k));
    }
}

#[test]
fn greedy_tail_keeps_the_greedy_prefix_and_its_calibration_error_on_mnist() {
    use subprune::prune::select::consumer_rows;
    use subprune::prune::select::greedy_tail::{informative_steps, GreedyTail};
    use subprune::prune::select::{act_norm, Selector};
    let (_, ls) = mnist_layerwise();
    let backend = CpuBackend::new();
    let greedy = Greedy::default();
    let tail = GreedyTail { greedy: &greedy };
    let mut tails_seen = 0;
    for i in 0..ls.layers.len() {
        let ctx = ls.context(i, &backend, 1e-7);
        let d = ctx.channels();
        let run = greedy.run(&ctx, &mut |_, _| {}).unwrap();
        let t = informative_steps(&run);
        let scores = act_norm::scores(&ctx);
        for k in [1, t.max(1), (t + 1).min(d), (t + 5).min(d), d / 2, d] {
            let s = tail.select(&ctx, k, &mut |_, _| {}).unwrap();
            let g = greedy.select(&ctx, k, &mut |_, _| {}).unwrap();
            assert_eq!(s.kept.len(), k);
            let prefix = &run.order[..t.min(k)];
            assert!(prefix.iter().all(|c| s.kept.contains(c)), "layer {i} k {k}");
            if k <= t {
                assert_eq!(s.kept, g.kept, "layer {i} k {k}: inside the prefix");
                continue;
            }
            // The tail holds the highest activations among the channels not in the prefix.
            let tail_min = s
                .kept
                .iter()
                .filter(|c| !prefix.contains(c))
                .map(|&c| scores[c])
                .fold(f64::INFINITY, f64::min);
            let left_max = (0..d)
                .filter(|c| !s.kept.contains(c))
                .map(|c| scores[c])
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(tail_min >= left_max, "layer {i} k {k}");
            if s.kept != g.kept {
                tails_seen += 1;
            }
            // Every completion of the prefix has the greedy's calibration error (exact least
            // squares: the tail channels add no gain). The Gram-form residual
            // `total − 2⟨V, C0⟩ + ⟨V, G V⟩` cancels down from `total`: equal to 1e-5 of it.
            for st in ctx.stats {
                let e_tail = consumer_rows(st, &s, true, 0.0, 1e-7).unwrap().residual;
                let e_greedy = consumer_rows(st, &g, true, 0.0, 1e-7).unwrap().residual;
                assert!(
                    (e_tail - e_greedy).abs() <= 1e-5 * st.total,
                    "layer {i} k {k}: tail {e_tail}, greedy {e_greedy}, total {}",
                    st.total
                );
            }
        }
    }
    // 64 calibration images: conv2 → fc1 (3136 columns) and fc1 (128) have zero-gain tails, and
    // act-norm picks differently from the index order there.
    assert!(tails_seen >= 2, "{tails_seen}");
}

#[test]
fn every_selector_returns_a_valid_keep_set_of_the_requested_size() {
    let (_, ls) = mnist_layerwise();
    let backend = CpuBackend::new();
    for method in Method::ALL {
        let selector = method.selector(7);
        for i in 0..ls.layers.len() {
            let ctx = ls.context(i, &backend, 1e-7);
            let d = ctx.channels();
            for k in [1, d / 3, d - 1, d] {
                let s = selector.select(&ctx, k, &mut |_, _| {}).unwrap();
                assert_eq!(s.kept.len(), k, "{method} layer {i} k {k}");
                assert!(
                    s.kept.windows(2).all(|w| w[0] < w[1]),
                    "{method}: sorted, distinct"
                );
                assert!(s.kept.iter().all(|&c| c < d), "{method}: in range");
                if let Some(scale) = &s.row_scale {
                    assert_eq!(scale.len(), k);
                    assert!(scale.iter().all(|x| x.is_finite() && *x > 0.0));
                }
            }
            let err = selector.select(&ctx, 0, &mut |_, _| {}).unwrap_err();
            assert!(err.to_string().contains("keep 0"), "{err}");
            assert!(selector.select(&ctx, d + 1, &mut |_, _| {}).is_err());
        }
    }
}

#[test]
fn random_methods_are_seeded_deterministic() {
    let (_, ls) = mnist_layerwise();
    let backend = CpuBackend::new();
    let ctx = ls.context(1, &backend, 1e-7); // conv2: 64 channels
    for method in [Method::Random, Method::LayerSampling] {
        let a = method.selector(3).select(&ctx, 16, &mut |_, _| {}).unwrap();
        let b = method.selector(3).select(&ctx, 16, &mut |_, _| {}).unwrap();
        let c = method.selector(4).select(&ctx, 16, &mut |_, _| {}).unwrap();
        assert_eq!(a.kept, b.kept, "{method}: same seed, same set");
        assert_eq!(a.row_scale, b.row_scale);
        assert_ne!(a.kept, c.kept, "{method}: another seed, another set");
    }
}

/// l1 norm of each input channel's weights, straight from the consumer's ONNX initializer.
fn direct_weight_norms(graph: &subprune::ir::Graph, consumer: usize, channels: usize) -> Vec<f64> {
    let node = &graph.nodes[consumer];
    let w = node.inputs[1].unwrap();
    let c = graph.constant(w).unwrap();
    let data = c.f32().unwrap();
    let dims = &c.dims;
    let mut out = vec![0.0f64; channels];
    match &node.op {
        subprune::ir::Op::Conv(_) => {
            // (M, C, kh, kw)
            let per = dims[2] * dims[3];
            for m in 0..dims[0] {
                for (ch, o) in out.iter_mut().enumerate() {
                    let start = (m * dims[1] + ch) * per;
                    *o += data[start..start + per]
                        .iter()
                        .map(|x| x.abs() as f64)
                        .sum::<f64>();
                }
            }
        }
        subprune::ir::Op::Gemm(g) => {
            assert!(g.trans_b, "the fixture's Gemms are transB");
            let (m, k) = (dims[0], dims[1]);
            let per = k / channels;
            for r in 0..m {
                for (ch, o) in out.iter_mut().enumerate() {
                    let start = r * k + ch * per;
                    *o += data[start..start + per]
                        .iter()
                        .map(|x| (x * g.alpha).abs() as f64)
                        .sum::<f64>();
                }
            }
        }
        op => panic!("unexpected consumer {op:?}"),
    }
    out
}

#[test]
fn weight_norm_equals_a_direct_computation_on_the_onnx_weight() {
    let (m, ls) = mnist_layerwise();
    let backend = CpuBackend::new();
    for (i, l) in ls.layers.iter().enumerate() {
        assert_eq!(l.layer.consumers.len(), 1);
        let d = l.layer.channels;
        let direct = direct_weight_norms(&m.graph, l.layer.consumers[0].node, d);
        let ctx = ls.context(i, &backend, 1e-7);
        let ours = subprune::prune::select::weight_norm::scores(&ctx);
        for (a, b) in ours.iter().zip(&direct) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
        }
        let k = d / 4;
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| direct[b].total_cmp(&direct[a]));
        let mut expect = order[..k].to_vec();
        expect.sort_unstable();
        let got = Method::WeightNorm
            .selector(0)
            .select(&ctx, k, &mut |_, _| {})
            .unwrap();
        assert_eq!(got.kept, expect, "layer {}", l.layer.name);
    }
}

/// A hand-checkable Linear layer: B (rows × 3), W (3 × 2), statistics computed here in f64.
fn hand_layer() -> LayerStats {
    // Channel 0: large activations, tiny outgoing weights; channel 1: medium both; channel 2: dead.
    let b = [
        [4.0, 1.0, 0.0],
        [-4.0, 2.0, 0.0],
        [4.0, -1.0, 0.0],
        [4.0, 1.0, 0.0],
    ];
    let w = [[0.01, 0.0], [1.0, -1.0], [5.0, 5.0]];
    let mut gram = vec![0.0; 9];
    for row in &b {
        for i in 0..3 {
            for j in 0..3 {
                gram[i * 3 + j] += row[i] * row[j];
            }
        }
    }
    let weight: Vec<f64> = w.iter().flatten().copied().collect();
    let mut c0 = vec![0.0; 6];
    for i in 0..3 {
        for o in 0..2 {
            c0[i * 2 + o] = (0..3).map(|k| gram[i * 3 + k] * w[k][o]).sum();
        }
    }
    let total = b
        .iter()
        .map(|row| {
            (0..2)
                .map(|o| (0..3).map(|k| row[k] * w[k][o]).sum::<f64>().powi(2))
                .sum::<f64>()
        })
        .sum();
    LayerStats {
        layout: ChannelLayout {
            channels: 3,
            columns_per_channel: 1,
        },
        outputs: 2,
        gram: gram.into(),
        c0: subprune::layer::StatsMatrix::from_host(c0, 2),
        total,
        weight,
        rows: 4,
        phases: Default::default(),
    }
}

#[test]
fn act_norm_and_layer_sampling_on_a_hand_checked_layer() {
    let st = [hand_layer()];
    let backend = CpuBackend::new();
    let ctx = subprune::prune::select::LayerContext {
        name: "hand",
        index: 0,
        stats: &st,
        backend: &backend,
        dependence_tol: 1e-12,
    };
    // Mean squares: channel 0: 16, channel 1: (1+4+1+1)/4 = 1.75, channel 2: 0.
    let act = subprune::prune::select::act_norm::scores(&ctx);
    assert_eq!(act, vec![16.0, 1.75, 0.0]);
    let kept = Method::ActNorm
        .selector(0)
        .select(&ctx, 1, &mut |_, _| {})
        .unwrap()
        .kept;
    assert_eq!(kept, vec![0]);
    // Weight norms: 0.01, 2, 10 → weight-norm keeps the dead channel 2 first.
    let kept = Method::WeightNorm
        .selector(0)
        .select(&ctx, 1, &mut |_, _| {})
        .unwrap()
        .kept;
    assert_eq!(kept, vec![2]);
    // Sensitivities ‖B_c W_c‖: channel 0: 4·sqrt(4)·0.01... = sqrt(64·0.0001) = 0.08,
    // channel 1: sqrt(7 · 2) = sqrt(14), channel 2: 0.
    let s = subprune::prune::select::layer_sampling::sensitivities(&ctx).unwrap();
    assert!((s[0] - 0.08).abs() < 1e-12, "{s:?}");
    assert!((s[1] - 14f64.sqrt()).abs() < 1e-12, "{s:?}");
    assert_eq!(s[2], 0.0);
    // Two channels with positive sensitivity: keep 2 takes exactly those; the importance weight
    // n_c / (draws · p_c) has mean 1 over seeds for the dominant channel.
    let mut mean = 0.0;
    for seed in 0..50 {
        let sel = Method::LayerSampling
            .selector(seed)
            .select(&ctx, 2, &mut |_, _| {})
            .unwrap();
        assert_eq!(sel.kept, vec![0, 1]);
        mean += sel.row_scale.unwrap()[1] / 50.0;
    }
    assert!((mean - 1.0).abs() < 0.05, "mean importance weight {mean}");
    // Keep 3: the dead channel fills the set with weight 1.
    let sel = Method::LayerSampling
        .selector(1)
        .select(&ctx, 3, &mut |_, _| {})
        .unwrap();
    assert_eq!(sel.kept, vec![0, 1, 2]);
    assert_eq!(sel.row_scale.unwrap()[2], 1.0);
}

#[test]
fn layerwise_greedy_equals_the_layer_variant_pipeline() {
    let (m, ls) = mnist_layerwise();
    let backend = CpuBackend::new();
    let options = PruneOptions {
        variant: Variant::Layer,
        keep_fraction: 0.3,
        ..Default::default()
    };
    let pruned = prune(m, &mnist_calib(64), &options, &mut |_| {}).unwrap();
    let keeps: Vec<usize> = pruned
        .report
        .layers
        .iter()
        .map(|l| l.channels_after)
        .collect();
    let (g, sel) = ls
        .prune(&m.graph, &Greedy::default(), &keeps, &options, &backend)
        .unwrap();
    for (l, (s, err)) in pruned.report.layers.iter().zip(&sel) {
        assert_eq!(l.kept, s.kept, "{}", l.name);
        assert!((l.relative_error - err).abs() <= 1e-9, "{}", l.name);
    }
    assert_eq!(g.parameter_count(), pruned.report.parameters_after);
}

#[test]
fn bad_input_is_a_clear_error() {
    let err = "magic".parse::<Method>().unwrap_err().to_string();
    assert!(
        err.contains("magic") && err.contains("weight-norm"),
        "{err}"
    );
}
