//! Channels pruned jointly through ops that keep channel `c` in place with parameters of their own
//! (issue 22's channel rules), checked by brute force on small graphs: the pruned graph's output
//! equals the original graph's output with the removed channels zeroed in every member (before
//! reweighting), and the written model runs in tract (an independent runtime) with the same output.

mod common;
#[path = "channel_groups/grouped.rs"]
mod grouped;
#[path = "common/tract.rs"]
mod tract;

use subprune::analysis::analyze;
use subprune::exec::run::F32Images;
use subprune::exec::CpuExecutor;
use subprune::ir::{ConstData, Graph, Op};
use subprune::prune::{prune, PruneOptions};
use subprune::rng::Rng;
use subprune::synthetic::{ints, Builder};
use subprune::tensor::Tensor;

use common::{relative_gap, run_in_batches, temp_dir};

fn random_images(seed: u64, shape: &[usize]) -> Tensor {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.normal() as f32).collect(),
    )
    .unwrap()
}

/// A 1×1 conv with bias from the input `x` (3 → 8 channels); returns its output.
fn expand_conv(b: &mut Builder) -> String {
    let w = b.weight(&[8, 3, 1, 1], 0.8);
    let bias = b.weight(&[8], 0.3);
    b.node(
        "Conv",
        &["x", &w, &bias],
        vec![ints("kernel_shape", &[1, 1])],
    )
}

/// The model `bytes` as loaded (`name` for messages).
fn load(name: &str, bytes: &[u8]) -> subprune::onnx::OnnxModel {
    subprune::onnx::load_bytes(std::path::Path::new(name), bytes).unwrap()
}

/// expand 1×1 (3 → 8, bias) → Clip(0, 6) → depthwise 3×3 (group 8, bias) → Relu → project 1×1
/// (8 → 4, bias): MobileNet's inverted residual without the shortcut.
fn inverted_residual() -> subprune::onnx::OnnxModel {
    let mut b = Builder::new(7);
    let x = expand_conv(&mut b);
    let (lo, hi) = (b.constant(0.0), b.constant(6.0));
    let x = b.node("Clip", &[&x, &lo, &hi], vec![]);
    let w = b.weight(&[8, 1, 3, 3], 0.5);
    let bias = b.weight(&[8], 0.3);
    let x = b.node(
        "Conv",
        &[&x, &w, &bias],
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            subprune::synthetic::int("group", 8),
        ],
    );
    let x = b.node("Relu", &[&x], vec![]);
    let w = b.weight(&[4, 8, 1, 1], 0.5);
    let bias = b.weight(&[4], 0.1);
    let y = b.node(
        "Conv",
        &[&x, &w, &bias],
        vec![ints("kernel_shape", &[1, 1])],
    );
    let bytes = b.model("inverted_residual", &[3, 6, 6], &y, 13);
    load("inverted_residual.onnx", &bytes)
}

/// Zeroes entries `removed` along `axis` of constant `v`.
fn zero_along(graph: &mut Graph, v: usize, axis: usize, removed: &[usize]) {
    let c = graph.values[v].constant.as_mut().unwrap();
    let dims = c.dims.clone();
    let ConstData::F32(data) = &mut c.data else {
        panic!("float constant")
    };
    let inner: usize = dims[axis + 1..].iter().product();
    let n = dims[axis];
    for (i, x) in data.iter_mut().enumerate() {
        if removed.contains(&((i / inner) % n)) {
            *x = 0.0;
        }
    }
}

/// Prunes `layer` of `model` to `keep` channels without reweighting and checks the pruned graph's
/// output against the original graph's with the removed channels zeroed in every member (the
/// layer's sliced parameters), on random images; returns the pruned model.
fn pruned_equals_zeroed(
    model: &subprune::onnx::OnnxModel,
    layer: &str,
    keep: usize,
    seed: u64,
) -> subprune::prune::Pruned {
    let analysis = analyze(&model.graph);
    let l = analysis.prunable(layer).expect("prunable");
    let image: Vec<usize> = model.graph.values[model.graph.inputs[0]].shape.0[1..]
        .iter()
        .map(|d| d.at(1))
        .collect();
    let shape = |n: usize| [vec![n], image.clone()].concat();
    let calib = F32Images::new("calib", random_images(seed, &shape(16))).unwrap();
    let options = PruneOptions {
        keep: vec![(layer.into(), keep)],
        skip: analysis
            .prunable
            .iter()
            .filter(|g| g.name != layer)
            .map(|g| g.name.clone())
            .collect(),
        reweight: false,
        ..Default::default()
    };
    let pruned = prune(model, &calib, &options, &mut |_| {}).unwrap();
    let kept = &pruned.report.layers[0].kept;
    assert_eq!(kept.len(), keep);
    // Each parameter is indexed by the positions of the value it follows: zero those whose
    // group channel is removed.
    let mut zeroed = model.graph.clone();
    for p in &l.params {
        let removed: Vec<usize> = (l.positions(p.of).unwrap().iter().enumerate())
            .filter(|(_, c)| !kept.contains(c))
            .map(|(pos, _)| pos)
            .collect();
        zero_along(&mut zeroed, p.value, p.axis, &removed);
    }
    let test = random_images(seed + 1, &shape(10));
    let want = run_in_batches(&CpuExecutor::new(&zeroed).unwrap(), &test, 4);
    let got = run_in_batches(&CpuExecutor::new(&pruned.model.graph).unwrap(), &test, 4);
    let gap = relative_gap(&got, &want);
    assert!(gap < 1e-5, "pruned vs zeroed: {gap}");
    // Zeroing changes the output: the check can fail.
    let whole = run_in_batches(&CpuExecutor::new(&model.graph).unwrap(), &test, 4);
    assert!(relative_gap(&whole, &want) > 1e-3);
    pruned
}

#[test]
fn depthwise_pass_through_prunes_like_zeroing_the_removed_channels() {
    let model = inverted_residual();
    let analysis = analyze(&model.graph);
    let layer = analysis
        .prunable("Conv_0")
        .expect("the expand conv is prunable");
    let dw = model
        .graph
        .nodes
        .iter()
        .position(|n| n.name == "Conv_4")
        .unwrap();
    assert_eq!(layer.depthwise(), [dw]);
    assert_eq!(layer.consumers.len(), 1);
    assert_eq!(layer.consumers[0].name, "Conv_6");
    // expand weight and bias, depthwise weight and bias.
    assert_eq!(layer.params.len(), 4);

    let pruned = pruned_equals_zeroed(&model, "Conv_0", 5, 1);
    match &pruned.model.graph.nodes[dw].op {
        Op::Conv(c) => assert_eq!(c.group, 5),
        op => panic!("{op:?}"),
    }
    let test = random_images(2, &[10, 3, 6, 6]);
    let got = run_in_batches(&CpuExecutor::new(&pruned.model.graph).unwrap(), &test, 4);

    // The written model (group attribute, sliced tensors) runs in tract with the same output.
    let dir = temp_dir("channel-groups");
    let path = dir.join("pruned.onnx");
    subprune::onnx::save(&pruned.model, &path, &Default::default()).unwrap();
    let (shape, theirs) = tract::tract_output(&path, &test);
    assert_eq!(shape, [10, 4, 6, 6]);
    let gap = relative_gap(&theirs, &got);
    assert!(gap < 1e-5, "tract vs subprune: {gap}");
}

#[test]
fn a_depthwise_conv_with_a_depth_multiplier_prunes_both_copies_of_a_channel() {
    // 8 channels → depthwise with multiplier 2 (group 8, 16 outputs): output channels 2c and
    // 2c + 1 both read input channel c, so removing channel c removes both; the consumer reads
    // two positions per group channel.
    let mut b = Builder::new(3);
    let w = b.weight(&[8, 3, 1, 1], 0.8);
    let x = b.node("Conv", &["x", &w], vec![ints("kernel_shape", &[1, 1])]);
    let w = b.weight(&[16, 1, 3, 3], 0.5);
    let x = b.node(
        "Conv",
        &[&x, &w],
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            subprune::synthetic::int("group", 8),
        ],
    );
    let w = b.weight(&[4, 16, 1, 1], 0.5);
    let y = b.node("Conv", &[&x, &w], vec![ints("kernel_shape", &[1, 1])]);
    let bytes = b.model("multiplier", &[3, 6, 6], &y, 13);
    let model = load("multiplier.onnx", &bytes);
    let a = analyze(&model.graph);
    let g = a
        .prunable("Conv_0")
        .expect("prunable through the multiplier");
    assert_eq!(g.channels, 8);
    assert_eq!(g.depthwise(), [1]);
    let dw_out = model.graph.nodes[1].outputs[0];
    let positions = g.positions(dw_out).unwrap();
    assert_eq!(positions, (0..16).map(|p| p / 2).collect::<Vec<_>>());
    let pruned = pruned_equals_zeroed(&model, "Conv_0", 5, 11);
    let conv = |i: usize| match &pruned.model.graph.nodes[i].op {
        Op::Conv(c) => c.group,
        _ => panic!("conv"),
    };
    assert_eq!(conv(1), 5, "group follows the kept channels");
    let dw_w = pruned.model.graph.nodes[1].inputs[1].unwrap();
    assert_eq!(pruned.model.graph.constant(dw_w).unwrap().dims[0], 10);
}

#[test]
fn consumers_of_one_layer_count_alike_whatever_their_scale() {
    use subprune::{layer::run_greedy_shared, layer_stats, CpuBackend, LayerProblem};
    // Two orthogonal unit channels read by two Linear consumers. Consumer 1 (weights 10, 9) has
    // gains 100 and 81 (‖A₁W₁‖² = 181); consumer 2 (weights 0.1, 1) has 0.01 and 1 (1.01). A raw
    // sum picks channel 0 (100.01 > 82); the normalised sum picks channel 1 (0.552 + 0.0099 <
    // 0.448 + 0.990).
    let inputs = Tensor::new(vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
    let backend = CpuBackend::new();
    let stats: Vec<_> = [[10.0f32, 9.0], [0.1, 1.0]]
        .iter()
        .map(|w| {
            let weight = Tensor::new(vec![1, 2], w.to_vec()).unwrap();
            let problem = LayerProblem::new(&inputs.shape, weight.view(), None).unwrap();
            layer_stats(&backend, &problem, inputs.view(), None, 8).unwrap()
        })
        .collect();
    let run = run_greedy_shared(&backend, &stats, 1e-9, &mut |_, _| {}).unwrap();
    assert_eq!(run.order, [1, 0]);
    assert_eq!(run.total, 2.0);
    // After channel 1: consumer 1 keeps 81/181 of its objective, consumer 2 keeps 1/1.01.
    let want = ((1.0 - 81.0 / 181.0) + (1.0 - 1.0 / 1.01)) / 2.0;
    assert!(
        (run.error_curve[0] - want).abs() < 1e-6,
        "{:?}",
        run.error_curve
    );
    assert!(run.error_curve[1].abs() < 1e-9);
    // One consumer alone: its own order and ‖AW‖² units.
    let alone = run_greedy_shared(&backend, &stats[..1], 1e-9, &mut |_, _| {}).unwrap();
    assert_eq!(alone.order, [0, 1]);
    assert!((alone.total - 181.0).abs() < 1e-3);
}

/// conv (3 → 8, 1×1, bias) → x · sigmoid(x) (SiLU as exporters write it) → conv (8 → 4, 3×3).
fn silu_model() -> subprune::onnx::OnnxModel {
    let mut b = Builder::new(9);
    let x = expand_conv(&mut b);
    let s = b.node("Sigmoid", &[&x], vec![]);
    let x = b.node("Mul", &[&x, &s], vec![]);
    let w = b.weight(&[4, 8, 3, 3], 0.3);
    let y = b.node(
        "Conv",
        &[&x, &w],
        vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
    );
    let bytes = b.model("silu", &[3, 6, 6], &y, 13);
    load("silu.onnx", &bytes)
}

#[test]
fn silu_written_as_x_times_sigmoid_x_keeps_channels_apart() {
    let model = silu_model();
    let analysis = analyze(&model.graph);
    let layer = analysis
        .prunable("Conv_0")
        .expect("x · sigmoid(x) does not couple the conv's channels");
    assert_eq!(layer.consumers.len(), 1);
    assert_eq!(layer.consumers[0].name, "Conv_3");
    // Zeroed channels stay zero through x · sigmoid(x).
    pruned_equals_zeroed(&model, "Conv_0", 3, 3);
    // x · σ(y) with y from another conv (a gate): channel c of both convs meets only channel
    // c, so the two convs are one group with two producers.
    let mut b = Builder::new(2);
    let w1 = b.weight(&[8, 3, 1, 1], 0.8);
    let w2 = b.weight(&[8, 3, 1, 1], 0.8);
    let x1 = b.node("Conv", &["x", &w1], vec![ints("kernel_shape", &[1, 1])]);
    let x2 = b.node("Conv", &["x", &w2], vec![ints("kernel_shape", &[1, 1])]);
    let s = b.node("Sigmoid", &[&x2], vec![]);
    let x = b.node("Mul", &[&x1, &s], vec![]);
    let w = b.weight(&[4, 8, 1, 1], 0.3);
    let y = b.node("Conv", &[&x, &w], vec![ints("kernel_shape", &[1, 1])]);
    let bytes = b.model("gate", &[3, 6, 6], &y, 13);
    let gated = load("gate.onnx", &bytes);
    let a = analyze(&gated.graph);
    let g = a.prunable("Conv_0").expect("one group");
    assert_eq!(g.producers, [0, 1]);
    assert!(g.stream);
    pruned_equals_zeroed(&gated, "Conv_0", 5, 4);
}

#[test]
fn a_reshape_to_minus_one_and_the_image_size_is_a_flatten() {
    // conv (1 → 6, 3×3, pad 1) on 5×5 → Relu → Reshape(-1, 150) → Gemm (150 → 4): the conv is
    // prunable with the Gemm reading 25 columns per channel, as through a Flatten.
    for (shape, prunable) in [([-1i64, 150], true), ([0, -1], true), ([-1, 75], false)] {
        let mut b = Builder::new(4);
        let w = b.weight(&[6, 1, 3, 3], 0.5);
        let x = b.node(
            "Conv",
            &["x", &w],
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        );
        let x = b.node("Relu", &[&x], vec![]);
        let target = b.ints(&shape);
        let x = b.node("Reshape", &[&x, &target], vec![]);
        let (rows, cols) = if shape == [-1, 75] { (4, 75) } else { (4, 150) };
        let w = b.weight(&[rows, cols], 0.1);
        let y = b.node(
            "Gemm",
            &[&x, &w],
            vec![subprune::synthetic::int("transB", 1)],
        );
        let bytes = b.model("reshape", &[1, 5, 5], &y, 13);
        let Ok(model) = subprune::onnx::load_bytes(std::path::Path::new("r.onnx"), &bytes) else {
            // (-1, 75) halves the batch's rows: a valid model only for even batches; the
            // importer may refuse it outright, which is fine for this check.
            assert!(!prunable);
            continue;
        };
        let a = analyze(&model.graph);
        match a.prunable("Conv_0") {
            Some(l) => {
                assert!(prunable, "{shape:?}");
                assert_eq!(l.consumers[0].columns_per_channel, 25, "{shape:?}");
            }
            None => assert!(!prunable, "{shape:?}: {:?}", a.coupled("Conv_0")),
        }
    }
}

#[test]
fn pruning_through_a_reshape_to_minus_one_and_the_image_size_updates_it() {
    let mut b = Builder::new(4);
    let w = b.weight(&[6, 1, 3, 3], 0.5);
    let x = b.node(
        "Conv",
        &["x", &w],
        vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
    );
    let x = b.node("Relu", &[&x], vec![]);
    let target = b.ints(&[-1, 150]);
    let x = b.node("Reshape", &[&x, &target], vec![]);
    let w = b.weight(&[4, 150], 0.1);
    let y = b.node(
        "Gemm",
        &[&x, &w],
        vec![subprune::synthetic::int("transB", 1)],
    );
    let bytes = b.model("reshape", &[1, 5, 5], &y, 13);
    let model = load("r.onnx", &bytes);
    let calib = F32Images::new("calib", random_images(5, &[40, 1, 5, 5])).unwrap();
    let options = PruneOptions {
        keep: vec![("Conv_0".into(), 4)],
        ..Default::default()
    };
    let pruned = prune(&model, &calib, &options, &mut |_| {}).unwrap();
    let test = random_images(6, &[5, 1, 5, 5]);
    let got = run_in_batches(&CpuExecutor::new(&pruned.model.graph).unwrap(), &test, 5);
    assert_eq!(got.len(), 5 * 4);
    let dir = temp_dir("reshape-flatten");
    let path = dir.join("pruned.onnx");
    subprune::onnx::save(&pruned.model, &path, &Default::default()).unwrap();
    let (shape, theirs) = tract::tract_output(&path, &test);
    assert_eq!(shape, [5, 4]);
    assert!(relative_gap(&theirs, &got) < 1e-5);
}

// ---- one test per channel rule: the pruned graph equals the zeroed one ----

/// A 1×1 conv `x` → `out` channels (no bias) with the builder's seed.
fn conv1x1(b: &mut Builder, x: &str, inputs: usize, out: usize) -> String {
    let w = b.weight(&[out, inputs, 1, 1], 0.7);
    b.node("Conv", &[x, &w], vec![ints("kernel_shape", &[1, 1])])
}

/// A 3×3 conv (pad 1) `x` → `out` channels with bias: the consumer the tests read through.
fn conv3x3(b: &mut Builder, x: &str, inputs: usize, out: usize) -> String {
    let w = b.weight(&[out, inputs, 3, 3], 0.3);
    let bias = b.weight(&[out], 0.2);
    b.node(
        "Conv",
        &[x, &w, &bias],
        vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
    )
}

/// The written model of `pruned` runs in tract with the output subprune computes.
fn tract_agrees(pruned: &subprune::prune::Pruned, name: &str) {
    let dir = temp_dir("channel-rules");
    let path = dir.join(format!("{name}.onnx"));
    subprune::onnx::save(&pruned.model, &path, &Default::default()).unwrap();
    let test = random_images(99, &[5, 3, 6, 6]);
    let ours = run_in_batches(&CpuExecutor::new(&pruned.model.graph).unwrap(), &test, 5);
    let (_, theirs) = tract::tract_output(&path, &test);
    let gap = relative_gap(&theirs, &ours);
    assert!(gap < 1e-5, "{name}: tract vs subprune: {gap}");
}

#[test]
fn concat_puts_each_producer_at_its_offset() {
    // Two convs (4 and 5 channels) concatenated: one group of 9 channels, two producers.
    let mut b = Builder::new(21);
    let a = conv1x1(&mut b, "x", 3, 4);
    let c = conv1x1(&mut b, "x", 3, 5);
    let x = b.node(
        "Concat",
        &[&a, &c],
        vec![subprune::synthetic::int("axis", 1)],
    );
    let x = b.node("Relu", &[&x], vec![]);
    let y = conv3x3(&mut b, &x, 9, 3);
    let model = load("concat.onnx", &b.model("concat", &[3, 6, 6], &y, 13));
    let g = analyze(&model.graph);
    let g = g.prunable("Conv_0").expect("prunable through Concat");
    assert_eq!((g.channels, g.producers.len()), (9, 2));
    let pruned = pruned_equals_zeroed(&model, "Conv_0", 4, 5);
    tract_agrees(&pruned, "concat");
}

#[test]
fn a_channel_slice_reads_a_range_and_follows_the_kept_channels() {
    // conv (8) → Slice channels 2..7 → conv (5 → 3); the whole 8 also read by a 1×1 conv.
    let mut b = Builder::new(22);
    let x = conv1x1(&mut b, "x", 3, 8);
    let x = b.node("Relu", &[&x], vec![]);
    let (s, e, axes) = (b.ints(&[2]), b.ints(&[7]), b.ints(&[1]));
    let part = b.node("Slice", &[&x, &s, &e, &axes], vec![]);
    let y1 = conv3x3(&mut b, &part, 5, 3);
    let y2 = conv1x1(&mut b, &x, 8, 3);
    let y = b.node("Add", &[&y1, &y2], vec![]);
    let model = load("slice.onnx", &b.model("slice", &[3, 6, 6], &y, 13));
    let a = analyze(&model.graph);
    let g = a
        .prunable("Conv_0")
        .expect("prunable through a channel Slice");
    assert_eq!(g.consumers.len(), 2);
    let pruned = pruned_equals_zeroed(&model, "Conv_0", 4, 6);
    tract_agrees(&pruned, "slice");
}

/// ResNet's option-A shortcut in small: conv A (4) padded with 2 zero channels on each side,
/// added to conv B (8), Relu, a 3×3 conv (8 → 3).
fn pad_model() -> subprune::onnx::OnnxModel {
    let mut b = Builder::new(23);
    let a = conv1x1(&mut b, "x", 3, 4);
    let pads = b.ints(&[0, 2, 0, 0, 0, 2, 0, 0]);
    let a = b.node("Pad", &[&a, &pads], vec![]);
    let c = conv1x1(&mut b, "x", 3, 8);
    let x = b.node("Add", &[&c, &a], vec![]);
    let x = b.node("Relu", &[&x], vec![]);
    let y = conv3x3(&mut b, &x, 8, 3);
    load("pad.onnx", &b.model("pad", &[3, 6, 6], &y, 13))
}

#[test]
fn a_channel_pad_shifts_the_channels_and_its_zero_bands_follow_the_kept_ones() {
    // ResNet's option-A shortcut: conv A (4) padded with 2 zero channels on each side, added to
    // conv B (8): A's channel c is B's channel 2 + c; B's channels 0, 1, 6, 7 meet zeros.
    let model = pad_model();
    let an = analyze(&model.graph);
    let g = an
        .prunable("Conv_0")
        .expect("prunable through a channel Pad");
    assert_eq!(g.channels, 8);
    let pad_out = model.graph.nodes[1].outputs[0];
    let b_out = model.graph.nodes[2].outputs[0];
    assert_eq!(g.positions(pad_out), g.positions(b_out), "tied by the Add");
    assert_eq!(g.positions(pad_out).unwrap()[2..6], [0, 1, 2, 3]);
    let pruned = pruned_equals_zeroed(&model, "Conv_0", 5, 7);
    let kept = &pruned.report.layers[0].kept;
    let before = kept.iter().filter(|c| [4, 5].contains(*c)).count();
    let Op::Pad { pads, .. } = &pruned.model.graph.nodes[1].op else {
        panic!("pad")
    };
    assert_eq!(
        pads[1] as usize, before,
        "zero channels kept before A's: {kept:?}"
    );
    tract_agrees(&pruned, "pad");
}

#[test]
fn squeeze_and_excitation_multiplies_the_channels_by_a_group_member() {
    // r = Relu(conv0(x)) (8); s = σ(conv2(Relu(conv1(GAP(r))))) (8); y = conv3(r · s).
    let mut b = Builder::new(24);
    let r = conv1x1(&mut b, "x", 3, 8);
    let r = b.node("Relu", &[&r], vec![]);
    let p = b.node("GlobalAveragePool", &[&r], vec![]);
    let sq = conv1x1(&mut b, &p, 8, 2);
    let sq = b.node("Relu", &[&sq], vec![]);
    let ex = conv1x1(&mut b, &sq, 2, 8);
    let s = b.node("Sigmoid", &[&ex], vec![]);
    let x = b.node("Mul", &[&r, &s], vec![]);
    let y = conv3x3(&mut b, &x, 8, 3);
    let model = load("se.onnx", &b.model("se", &[3, 6, 6], &y, 13));
    let a = analyze(&model.graph);
    let g = a
        .prunable("Conv_0")
        .expect("prunable through the excitation");
    let names: Vec<&str> = g
        .producers
        .iter()
        .map(|&p| model.graph.nodes[p].name.as_str())
        .collect();
    assert_eq!(
        names,
        ["Conv_0", "Conv_5"],
        "the excitation conv is a producer"
    );
    let consumers: Vec<&str> = g.consumers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        consumers,
        ["Conv_3", "Conv_8"],
        "the squeeze conv reads the pooled channels"
    );
    assert!(
        a.prunable("Conv_3").is_some(),
        "the squeeze channels are a group of their own"
    );
    let pruned = pruned_equals_zeroed(&model, "Conv_0", 5, 8);
    tract_agrees(&pruned, "se");
}

#[test]
fn a_residual_stream_ties_every_block_and_a_conv_can_read_and_write_it() {
    // s0 = Relu(conv0(x)); s1 = conv1(s0) + s0; s2 = conv2(s1) + s1; y = conv3(s2).
    let mut b = Builder::new(25);
    let s0 = conv1x1(&mut b, "x", 3, 6);
    let s0 = b.node("Relu", &[&s0], vec![]);
    let c1 = conv1x1(&mut b, &s0, 6, 6);
    let s1 = b.node("Add", &[&c1, &s0], vec![]);
    let c2 = conv3x3(&mut b, &s1, 6, 6);
    let s2 = b.node("Add", &[&c2, &s1], vec![]);
    let y = conv3x3(&mut b, &s2, 6, 3);
    let model = load("stream.onnx", &b.model("stream", &[3, 6, 6], &y, 13));
    let a = analyze(&model.graph);
    let g = a.prunable("Conv_0").expect("a prunable stream");
    assert_eq!(g.producers.len(), 3);
    assert_eq!(g.consumers.len(), 3);
    let pruned = pruned_equals_zeroed(&model, "Conv_0", 3, 9);
    tract_agrees(&pruned, "stream");
}

#[test]
fn groups_meeting_an_unknown_use_are_frozen_with_the_reason() {
    // Softmax over the channels mixes them.
    let mut b = Builder::new(26);
    let x = conv1x1(&mut b, "x", 3, 6);
    let x = b.node("Softmax", &[&x], vec![subprune::synthetic::int("axis", 1)]);
    let y = conv3x3(&mut b, &x, 6, 3);
    let model = load("softmax.onnx", &b.model("softmax", &[3, 6, 6], &y, 13));
    let a = analyze(&model.graph);
    let c = a.coupled("Conv_0").expect("frozen");
    assert!(
        c.reason.contains("Softmax") && c.reason.contains("no channel rule"),
        "{}",
        c.reason
    );
    // A residual Add with the graph input: the input's channels cannot be removed.
    let mut b = Builder::new(27);
    let x = conv1x1(&mut b, "x", 3, 3);
    let x = b.node("Add", &[&x, "x"], vec![]);
    let y = conv3x3(&mut b, &x, 3, 2);
    let model = load("input.onnx", &b.model("input", &[3, 6, 6], &y, 13));
    let a = analyze(&model.graph);
    let c = a.coupled("Conv_0").expect("frozen");
    assert!(c.reason.contains("graph input"), "{}", c.reason);
    // Every member of a frozen group is left whole, even one reached before the reason.
    let mut b = Builder::new(28);
    let p = conv1x1(&mut b, "x", 3, 4);
    let q = conv1x1(&mut b, "x", 3, 4);
    let x = b.node("Add", &[&p, &q], vec![]);
    let y = b.node("Softmax", &[&x], vec![subprune::synthetic::int("axis", 1)]);
    let model = load("both.onnx", &b.model("both", &[3, 6, 6], &y, 13));
    let a = analyze(&model.graph);
    assert!(a.prunable.is_empty());
    assert_eq!(a.coupled.len(), 2);
}

#[test]
fn a_keep_fraction_of_a_group_with_unequal_channels_is_a_share_of_its_parameters() {
    // The channel Pad model: conv A's 4 channels are also conv B's channels 2..6, so they hold
    // A's rows as well as B's; B's own channels 0, 1, 6, 7 hold B's rows only.
    let model = pad_model();
    let an = analyze(&model.graph);
    let g = an.prunable("Conv_0").unwrap();
    assert!(g.unequal_channels());
    // A: 4×3 rows, B: 8×3 rows, the consumer 3×8×9 columns (and its bias, not sliced).
    let total = g.weight_of(&(0..8).collect::<Vec<_>>());
    assert_eq!(total, (4 * 3 + 8 * 3 + 3 * 8 * 9) as f64);
    assert_eq!(g.channel_weights[0], 3.0 + 3.0 + 27.0);
    let calib = F32Images::new("calib", random_images(3, &[16, 3, 6, 6])).unwrap();
    let pruned = prune(&model, &calib, &PruneOptions::default(), &mut |_| {}).unwrap();
    // Two producers: a stream, which keeps round(0.5^STREAM_EXPONENT · 8) / 8 of its
    // parameters.
    let share = (0.5f64.powf(subprune::prune::budget::STREAM_EXPONENT) * 8.0).round() / 8.0;
    let kept = &pruned.report.layers[0].kept;
    assert!(g.weight_of(kept) <= total * share, "{kept:?}");
    assert!(
        g.weight_of(kept) > total * share - g.channel_weights[0],
        "{kept:?}: not the largest"
    );
    // An explicit count is a count.
    let options = PruneOptions {
        keep: vec![("Conv_0".into(), 4)],
        ..Default::default()
    };
    let pruned = prune(&model, &calib, &options, &mut |_| {}).unwrap();
    assert_eq!(pruned.report.layers[0].kept.len(), 4);
}

#[test]
fn a_regrouped_stream_prunes_alike_on_the_gpu_backend_and_executor() {
    // The Pad stream's consumer reads its group out of order (regrouped statistics): the GPU
    // executor and backend (lavapipe in CI) keep the same channels as the CPU, with errors close.
    let model = pad_model();
    let calib = F32Images::new("calib", random_images(5, &[24, 3, 6, 6])).unwrap();
    let options = PruneOptions {
        keep: vec![("Conv_0".into(), 5)],
        ..Default::default()
    };
    gpu_prunes_like_the_cpu(&model, &calib, &options);
}

/// Prunes `model` on the GPU executor and backend and on the CPU: every layer keeps the same
/// channels with errors close, and the pruned models agree; returns the CPU's.
fn gpu_prunes_like_the_cpu(
    model: &subprune::onnx::OnnxModel,
    calib: &F32Images,
    options: &PruneOptions,
) -> subprune::prune::Pruned {
    let gpu = common::gpu();
    let factory = |g: &Graph| -> subprune::Result<Box<dyn subprune::exec::Executor>> {
        Ok(Box::new(subprune::exec::GpuExecutor::new(g, gpu)?))
    };
    let on_gpu =
        subprune::prune::prune_with(model, calib, options, gpu, &factory, &mut |_| {}).unwrap();
    let on_cpu = prune(model, calib, options, &mut |_| {}).unwrap();
    for (g, c) in on_gpu.report.layers.iter().zip(&on_cpu.report.layers) {
        assert_eq!(g.kept, c.kept, "{}", c.name);
        assert!(
            (g.relative_error - c.relative_error).abs() <= 0.05 * c.relative_error + 1e-4,
            "{}: GPU {} vs CPU {}",
            c.name,
            g.relative_error,
            c.relative_error
        );
    }
    let test = random_images(6, &[6, 3, 6, 6]);
    let a = run_in_batches(&CpuExecutor::new(&on_gpu.model.graph).unwrap(), &test, 6);
    let b = run_in_batches(&CpuExecutor::new(&on_cpu.model.graph).unwrap(), &test, 6);
    assert!(relative_gap(&a, &b) < 1e-3, "{}", relative_gap(&a, &b));
    on_cpu
}

#[test]
fn a_channel_split_gives_each_part_its_range_and_the_sizes_follow() {
    // conv (8) → Split channels [3, 5] → a 3×3 conv on each part, added (YOLO's C2f shape).
    let mut b = Builder::new(29);
    let x = conv1x1(&mut b, "x", 3, 8);
    let x = b.node("Relu", &[&x], vec![]);
    let sizes = b.ints(&[3, 5]);
    let parts = b.node_outputs(
        "Split",
        &[&x, &sizes],
        vec![subprune::synthetic::int("axis", 1)],
        2,
    );
    let y1 = conv3x3(&mut b, &parts[0], 3, 2);
    let y2 = conv3x3(&mut b, &parts[1], 5, 2);
    let y = b.node("Add", &[&y1, &y2], vec![]);
    let model = load("split.onnx", &b.model("split", &[3, 6, 6], &y, 13));
    let a = analyze(&model.graph);
    let g = a
        .prunable("Conv_0")
        .expect("prunable through a channel Split");
    assert_eq!((g.channels, g.consumers.len()), (8, 2));
    let pruned = pruned_equals_zeroed(&model, "Conv_0", 4, 10);
    let kept = &pruned.report.layers[0].kept;
    let split = pruned
        .model
        .graph
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::Split { .. }))
        .unwrap();
    let Op::Split { sizes, .. } = &split.op else {
        unreachable!()
    };
    let first = kept.iter().filter(|&&c| c < 3).count();
    assert_eq!(sizes, &[first, kept.len() - first]);
    tract_agrees(&pruned, "split");
}
