//! Grouped convs (neither dense nor depthwise) as producers and consumers, and the channel
//! shuffle of ShuffleNet (`Reshape → Transpose → Reshape`) between two of them: brute force
//! (the pruned graph equals the zeroed one, tract runs the written model), and the reweighting
//! of a grouped consumer against f64 least squares solved block by block.

use super::*;
use subprune::synthetic::int;

/// The node that writes `output` (the builder names a node's output `{node}_out`).
fn node_of(output: &str) -> &str {
    output.trim_end_matches("_out")
}

/// A conv `x` → `out` channels in `group` groups (kernel `k`, pad `k/2`, with bias).
fn grouped(b: &mut Builder, x: &str, inputs: usize, out: usize, group: usize, k: usize) -> String {
    let w = b.weight(&[out, inputs / group, k, k], 0.5);
    let bias = b.weight(&[out], 0.2);
    let p = (k / 2) as i64;
    b.node(
        "Conv",
        &[x, &w, &bias],
        vec![
            ints("kernel_shape", &[k as i64, k as i64]),
            ints("pads", &[p, p, p, p]),
            int("group", group as i64),
        ],
    )
}

/// conv A (3 → 8) → Relu → grouped 3×3 conv G (8 → 8, `group`) → Relu → conv 3×3 (8 → 4):
/// G consumes A's channels and produces its own.
fn grouped_model(group: usize) -> (subprune::onnx::OnnxModel, String, String) {
    let mut b = Builder::new(40 + group as u64);
    let a = conv1x1(&mut b, "x", 3, 8);
    let x = b.node("Relu", &[&a], vec![]);
    let g = grouped(&mut b, &x, 8, 8, group, 3);
    let x = b.node("Relu", &[&g], vec![]);
    let y = conv3x3(&mut b, &x, 8, 4);
    let bytes = b.model("grouped", &[3, 6, 6], &y, 13);
    let (a, g) = (node_of(&a).to_string(), node_of(&g).to_string());
    (load("grouped.onnx", &bytes), a, g)
}

#[test]
fn a_grouped_conv_prunes_as_producer_and_consumer_with_equal_counts_per_group() {
    for group in [2, 4] {
        let (model, a, g) = grouped_model(group);
        let analysis = analyze(&model.graph);
        // Every group channel holds one position of each block: 8 / group channels.
        let la = analysis.prunable(&a).expect("A is prunable");
        assert_eq!(la.channels, 8 / group, "group {group}");
        assert_eq!(la.consumers.len(), 1);
        assert_eq!(la.consumers[0].name, g);
        let lg = analysis.prunable(&g).expect("the grouped conv is prunable");
        assert_eq!(lg.channels, 8 / group, "group {group}");
        for (layer, l) in [(&a, la), (&g, lg)] {
            let keep = l.channels / 2;
            let pruned = pruned_equals_zeroed(&model, layer, keep, 7);
            // The grouped conv keeps its group count, with 8/2 = 4 channels left on the side
            // that was pruned.
            let node = pruned
                .model
                .graph
                .nodes
                .iter()
                .find(|n| n.name == g)
                .unwrap();
            match &node.op {
                Op::Conv(c) => assert_eq!(c.group, group),
                op => panic!("{op:?}"),
            }
            let w = node.inputs[1].unwrap();
            let dims = &pruned.model.graph.values[w].constant.as_ref().unwrap().dims;
            let want = if layer == &a {
                [8, 4 / group, 3, 3]
            } else {
                [4, 8 / group, 3, 3]
            };
            assert_eq!(dims[..], want, "group {group}, layer {layer}");
            tract_agrees(&pruned, &format!("grouped{group}-{layer}"));
        }
    }
}

/// ShuffleNet's unit in small: conv A (3 → 8) → grouped 1×1 G1 (8 → 24, group 4) → Relu →
/// shuffle (Reshape (N, 4, 6, H, W), Transpose (0, 2, 1, 3, 4), Reshape (N, 24, H, W)) →
/// depthwise 3×3 → grouped 1×1 G2 (24 → 8, group 4) → Relu → conv 3×3 (8 → 3).
fn shuffle_model() -> (subprune::onnx::OnnxModel, [String; 3]) {
    let mut b = Builder::new(50);
    let a = conv1x1(&mut b, "x", 3, 8);
    let g1 = grouped(&mut b, &a, 8, 24, 4, 1);
    let x = b.node("Relu", &[&g1], vec![]);
    let split = b.ints(&[0, 4, 6, 6, 6]);
    let x = b.node("Reshape", &[&x, &split], vec![]);
    let x = b.node("Transpose", &[&x], vec![ints("perm", &[0, 2, 1, 3, 4])]);
    let merge = b.ints(&[0, 24, 6, 6]);
    let x = b.node("Reshape", &[&x, &merge], vec![]);
    let x = grouped(&mut b, &x, 24, 24, 24, 3);
    let g2 = grouped(&mut b, &x, 24, 8, 4, 1);
    let x = b.node("Relu", &[&g2], vec![]);
    let y = conv3x3(&mut b, &x, 8, 3);
    let bytes = b.model("shuffle", &[3, 6, 6], &y, 13);
    let names = [a, g1, g2].map(|s| node_of(&s).to_string());
    (load("shuffle.onnx", &bytes), names)
}

#[test]
fn a_channel_shuffle_between_grouped_convs_prunes_like_zeroing() {
    let (model, [a, g1, g2]) = shuffle_model();
    let analysis = analyze(&model.graph);
    let l1 = analysis
        .prunable(&g1)
        .expect("G1 is prunable through the shuffle");
    // Shuffled position 4j + b is channel j of block b; G2's blocks of 6 cut the runs of 4:
    // {j = 0, 2, 3, 5} and {1, 4} balance every block (equal offsets would tie all 24).
    assert_eq!(l1.channels, 2);
    assert_eq!(l1.consumers.len(), 1);
    assert_eq!(l1.consumers[0].name, g2);
    assert_eq!(l1.depthwise().len(), 1);
    for (layer, keep) in [(&a, 1), (&g1, 1), (&g2, 1)] {
        let pruned = pruned_equals_zeroed(&model, layer, keep, 11);
        tract_agrees(&pruned, &format!("shuffle-{layer}"));
    }
    // G1 keeps 4 runs (16 positions) or 2 (8): the shuffle's shapes follow.
    let pruned = pruned_equals_zeroed(&model, &g1, 1, 11);
    let shapes: Vec<Vec<i64>> = pruned
        .model
        .graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Reshape { shape, .. } => Some(shape.clone()),
            _ => None,
        })
        .collect();
    let g1_out = (model.graph.nodes.iter().find(|n| n.name == g1).unwrap()).outputs[0];
    let j = l1
        .kept_positions(g1_out, &pruned.report.layers[0].kept)
        .len() as i64
        / 4;
    assert!(j == 4 || j == 2, "{j}");
    assert_eq!(shapes, [vec![0, 4, j, 6, 6], vec![0, 4 * j, 6, 6]]);
}

#[test]
fn a_transpose_of_spatial_axes_is_left_whole_with_its_reason() {
    let mut b = Builder::new(60);
    let a = conv1x1(&mut b, "x", 3, 8);
    let x = b.node("Transpose", &[&a], vec![ints("perm", &[0, 1, 3, 2])]);
    let y = conv3x3(&mut b, &x, 8, 3);
    let model = load("transpose.onnx", &b.model("transpose", &[3, 6, 6], &y, 13));
    let analysis = analyze(&model.graph);
    let frozen = analysis.coupled(node_of(&a)).expect("left whole");
    assert!(
        frozen.reason.contains("Transpose") && frozen.reason.contains("[0, 1, 3, 2]"),
        "{}",
        frozen.reason
    );
}

/// `a (r × k)ᵀ · b (r × c)` in f64.
fn at_b(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; k * c];
    for row in 0..r {
        for i in 0..k {
            for j in 0..c {
                out[i * c + j] += a[row * k + i] * b[row * c + j];
            }
        }
    }
    out
}

/// Solves `g x = rhs` (`g` n × n symmetric positive definite, `rhs` n × c) by Gauss-Jordan.
fn solve(mut g: Vec<f64>, mut rhs: Vec<f64>, n: usize, c: usize) -> Vec<f64> {
    for p in 0..n {
        let d = g[p * n + p];
        for j in 0..n {
            g[p * n + j] /= d;
        }
        for j in 0..c {
            rhs[p * c + j] /= d;
        }
        for i in (0..n).filter(|&i| i != p) {
            let f = g[i * n + p];
            for j in 0..n {
                g[i * n + j] -= f * g[p * n + j];
            }
            for j in 0..c {
                rhs[i * c + j] -= f * rhs[p * c + j];
            }
        }
    }
    rhs
}

/// Least squares `min ‖target − cols(B) X‖` over the columns `cols` of `b` (`r` rows, `d`
/// columns); `target` is `r × c`.
fn least_squares(b: &[f64], d: usize, cols: &[usize], target: &[f64], c: usize) -> Vec<f64> {
    let r = b.len() / d;
    let sub: Vec<f64> = (0..r)
        .flat_map(|row| cols.iter().map(move |&j| b[row * d + j]))
        .collect();
    let n = cols.len();
    solve(at_b(&sub, &sub, r, n, n), at_b(&sub, target, r, n, c), n, c)
}

#[test]
fn a_grouped_consumer_is_reweighted_block_by_block_as_f64_least_squares() {
    // x (4 channels) → conv A 1×1 (4 → 8) → grouped 1×1 C (8 → 6, group 2). C's output block b
    // (3 outputs) reads A's positions 4b..4b + 4 only, so its best kept weights solve one least
    // squares per block; the dense solution over all kept positions differs.
    let mut b = Builder::new(70);
    let a = conv1x1(&mut b, "x", 4, 8);
    let y = grouped(&mut b, &a, 8, 6, 2, 1);
    let model = load(
        "grouped-ls.onnx",
        &b.model("grouped_ls", &[4, 5, 5], &y, 13),
    );
    let (a, c) = (node_of(&a), node_of(&y));
    let analysis = analyze(&model.graph);
    let group = analysis.prunable(a).unwrap();
    assert_eq!(group.channels, 4);

    let calib = random_images(71, &[16, 4, 5, 5]);
    let options = PruneOptions {
        keep: vec![(a.into(), 2)],
        ridge: 0.0,
        ..Default::default()
    };
    let images = F32Images::new("calib", calib.clone()).unwrap();
    let pruned = prune(&model, &images, &options, &mut |_| {}).unwrap();
    let kept = &pruned.report.layers[0].kept;
    let node = |g: &Graph, name: &str| g.nodes.iter().find(|n| n.name == name).unwrap().clone();
    let weight = |g: &Graph, name: &str| {
        let v = node(g, name).inputs[1].unwrap();
        g.values[v]
            .constant
            .as_ref()
            .unwrap()
            .f32()
            .unwrap()
            .to_vec()
    };
    let input = node(&model.graph, c).inputs[0].unwrap();
    let positions: Vec<usize> = group.kept_positions(input, kept);

    // B: A's output per pixel (rows n·h·w, 8 columns), in f64 from the f32 inputs.
    let wa = weight(&model.graph, a);
    let rows = 16 * 25;
    let mut act = vec![0.0f64; rows * 8];
    for n in 0..16 {
        for p in 0..25 {
            for ch in 0..8 {
                act[(n * 25 + p) * 8 + ch] = (0..4)
                    .map(|i| wa[ch * 4 + i] as f64 * calib.data[(n * 4 + i) * 25 + p] as f64)
                    .sum();
            }
        }
    }
    let wc = weight(&model.graph, c); // (6, 4): output o reads positions 4·(o/3) + i.
    let got = weight(&pruned.model.graph, c); // (6, 2)
    assert_eq!(got.len(), 12);
    let mut dense_gap = 0.0f64;
    for blk in 0..2 {
        let cols: Vec<usize> = positions.iter().copied().filter(|p| p / 4 == blk).collect();
        assert_eq!(cols.len(), 2, "equal counts per group: {positions:?}");
        // Target: this block's outputs.
        let target: Vec<f64> = (0..rows)
            .flat_map(|r| {
                let act = &act;
                let wc = &wc;
                (0..3).map(move |o| {
                    (0..4)
                        .map(|i| act[r * 8 + blk * 4 + i] * wc[(blk * 3 + o) * 4 + i] as f64)
                        .sum::<f64>()
                })
            })
            .collect();
        let want = least_squares(&act, 8, &cols, &target, 3);
        let dense = least_squares(&act, 8, &positions, &target, 3);
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for o in 0..3 {
            for (j, _) in cols.iter().enumerate() {
                let ours = got[(blk * 3 + o) * 2 + j] as f64;
                let theirs = want[j * 3 + o];
                assert!(
                    (ours - theirs).abs() <= 1e-3 * scale,
                    "block {blk} output {o} column {j}: {ours} vs least squares {theirs}"
                );
                let k = positions.iter().position(|&p| p == cols[j]).unwrap();
                dense_gap = dense_gap.max((dense[k * 3 + o] - theirs).abs() / scale);
            }
        }
    }
    // The block-diagonal form matters: solving over every kept position gives other weights.
    assert!(
        dense_gap > 1e-2,
        "dense and per-block solutions agree: {dense_gap}"
    );
}

#[test]
fn a_channel_shuffle_prunes_alike_on_the_gpu_backend_and_executor() {
    // Every group of the shuffle model (grouped statistics read back and masked on the host):
    // the GPU executor and backend (lavapipe in CI) keep the channels the CPU keeps.
    let (model, _) = shuffle_model();
    let calib = F32Images::new("calib", random_images(12, &[24, 3, 6, 6])).unwrap();
    let on_cpu = gpu_prunes_like_the_cpu(&model, &calib, &PruneOptions::default());
    assert_eq!(on_cpu.report.layers.len(), 3);
    tract_agrees(&on_cpu, "shuffle-all");
}
