//! Channel dependencies on the four fixture networks (`subprune::analysis::channels`): which
//! producers are prunable, through what, and which are coupled and why. The expectations come
//! from the architectures described in `tests/fixtures/README.md`, not from the code's output.

mod common;

use common::fixture;
use subprune::analysis::{analyze, ConsumerKind};

#[test]
fn mnist_conv1_conv2_fc1_prunable_fc2_coupled_to_the_output() {
    let model = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let a = analyze(&model.graph);
    let names: Vec<&str> = a.prunable.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "fc1"]);
    let conv1 = a.prunable("conv1").unwrap();
    assert_eq!(conv1.channels, 32);
    assert_eq!(conv1.consumers.len(), 1);
    assert_eq!(conv1.consumers[0].name, "conv2");
    assert_eq!(conv1.consumers[0].kind, ConsumerKind::Conv);
    assert_eq!(conv1.consumers[0].columns_per_channel, 9);
    assert_eq!(conv1.consumers[0].image_shape, [32, 14, 14]);
    // conv2 → relu → pool → flatten → fc1: 64 channels of 7×7 columns.
    let conv2 = a.prunable("conv2").unwrap();
    assert_eq!(conv2.consumers[0].name, "fc1");
    assert_eq!(conv2.consumers[0].kind, ConsumerKind::FlattenLinear);
    assert_eq!(conv2.consumers[0].columns_per_channel, 49);
    assert_eq!(conv2.consumers[0].image_shape, [64, 7, 7]);
    // weight and bias of the producer
    assert_eq!(conv2.params.len(), 2);
    let fc1 = a.prunable("fc1").unwrap();
    assert_eq!(fc1.consumers[0].name, "fc2");
    assert_eq!(fc1.consumers[0].kind, ConsumerKind::Linear);
    let fc2 = a.coupled("fc2").unwrap();
    assert!(fc2.reason.contains("graph output"), "{}", fc2.reason);
}

#[test]
fn resnet56_first_block_convs_prunable_block_outputs_coupled() {
    let model = subprune::onnx::load(fixture("resnet56_cifar10.onnx")).unwrap();
    let a = analyze(&model.graph);
    assert_eq!(
        a.prunable.len(),
        27,
        "the first conv of each of the 27 blocks"
    );
    for stage in 1..=3 {
        for block in 0..9 {
            let conv1 = a.prunable(&format!("layer{stage}.{block}.conv1")).unwrap();
            assert_eq!(conv1.channels, 16 << (stage - 1));
            assert_eq!(conv1.consumers.len(), 1);
            assert_eq!(
                conv1.consumers[0].name,
                format!("layer{stage}.{block}.conv2")
            );
            // conv weight + bn scale, shift, mean, var
            assert_eq!(conv1.params.len(), 5);
            let conv2 = a.coupled(&format!("layer{stage}.{block}.conv2")).unwrap();
            assert!(conv2.reason.contains("Add"), "{}", conv2.reason);
        }
    }
    // The stem feeds the first residual Add; the classifier the output.
    assert!(a.coupled("conv1").unwrap().reason.contains("Add"));
    assert!(a.coupled("linear").unwrap().reason.contains("graph output"));
    assert_eq!(a.coupled.len(), 29);
}

#[test]
fn vgg11_seven_convs_and_two_hidden_gemms() {
    let model = subprune::onnx::load(fixture("vgg11_bn_fashion.onnx")).unwrap();
    let a = analyze(&model.graph);
    let convs = ["0", "4", "8", "11", "15", "18", "22"];
    for (i, c) in convs.iter().enumerate() {
        let l = a.prunable(&format!("/features/features.{c}/Conv")).unwrap();
        assert_eq!(l.consumers.len(), 1);
        assert_eq!(l.consumers[0].kind, ConsumerKind::Conv);
        assert_eq!(
            l.consumers[0].name,
            format!(
                "/features/features.{}/Conv",
                convs.get(i + 1).unwrap_or(&"25")
            )
        );
    }
    // The last conv reaches the first Gemm through pool and Flatten (1×1 maps): prunable, and
    // skipped on the command line as in the paper.
    let last = a.prunable("/features/features.25/Conv").unwrap();
    assert_eq!(last.consumers[0].kind, ConsumerKind::FlattenLinear);
    assert_eq!(last.consumers[0].columns_per_channel, 1);
    for g in ["0", "3"] {
        let l = a
            .prunable(&format!("/classifier/classifier.{g}/Gemm"))
            .unwrap();
        assert_eq!(l.channels, 128);
        assert_eq!(l.consumers[0].kind, ConsumerKind::Linear);
    }
    assert_eq!(a.prunable.len(), 10);
    assert_eq!(a.coupled.len(), 1);
}

#[test]
fn mobilenetv2_expand_depthwise_project_prunable_residuals_coupled_multi_consumer_stem() {
    let model = subprune::onnx::load(fixture("mobilenetv2_fashion.onnx")).unwrap();
    let a = analyze(&model.graph);
    let graph = &model.graph;
    let producers = graph.producers();
    let mut depthwise = 0;
    for (i, n) in graph.nodes.iter().enumerate() {
        if let subprune::ir::Op::Conv(c) = &n.op {
            if c.group > 1 {
                depthwise += 1;
                // The expand conv that feeds the depthwise conv (through Clip, ReLU6) is prunable,
                // with the depthwise conv as a pass-through and the project conv as its consumer.
                let clip = &graph.nodes[producers[n.inputs[0].unwrap()].unwrap()];
                let expand = &graph.nodes[producers[clip.inputs[0].unwrap()].unwrap()];
                let e = a.prunable(&expand.name).expect("expand prunable");
                assert_eq!(e.depthwise, [i], "{}", expand.name);
                assert_eq!(e.consumers.len(), 1, "{}", expand.name);
                assert!(
                    e.consumers[0].name.ends_with("conv3/Conv"),
                    "{:?}",
                    e.consumers
                );
                assert_eq!(e.consumers[0].columns_per_channel, 1);
                // The depthwise weight rows and bias are sliced with the channels.
                assert!(e.params.len() >= 4, "{:?}", e.params);
                // The depthwise conv itself is no producer of its own: it goes with the expand.
                let dw = a.coupled(&n.name).expect("depthwise conv listed");
                assert!(
                    dw.reason.contains("depthwise") && dw.reason.contains(&expand.name),
                    "{}",
                    dw.reason
                );
            }
        }
    }
    assert_eq!(depthwise, 17);
    // Every project conv that feeds a residual Add is coupled by it.
    let by_add = a
        .coupled
        .iter()
        .filter(|c| c.reason.contains("Add"))
        .count();
    assert!(by_add >= 10, "{by_add}");
    // The stem feeds block 0's expand conv and its 1×1 shortcut conv: one prunable layer with two
    // consumers (statistics summed, selection shared).
    let stem = a.prunable("/conv1/Conv").unwrap();
    assert_eq!(stem.consumers.len(), 2);
    assert!(stem.consumers.iter().all(|c| c.kind == ConsumerKind::Conv));
    assert!(stem.depthwise.is_empty());
    assert!(a.prunable("/conv2/Conv").is_some());
    // The stem, the 17 expand convs and the last 1×1 conv.
    assert_eq!(a.prunable.len(), 19);
}
