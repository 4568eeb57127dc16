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
fn resnet56_block_groups_and_one_stream_through_the_option_a_shortcuts() {
    let model = subprune::onnx::load(fixture("resnet56_cifar10.onnx")).unwrap();
    let graph = &model.graph;
    let a = analyze(graph);
    assert_eq!(
        a.prunable.len(),
        28,
        "27 block-internal groups and one stream"
    );
    for stage in 1..=3 {
        for block in 0..9 {
            let conv1 = a.prunable(&format!("layer{stage}.{block}.conv1")).unwrap();
            assert!(!conv1.stream);
            assert_eq!(conv1.channels, 16 << (stage - 1));
            assert_eq!(conv1.consumers.len(), 1);
            assert_eq!(
                conv1.consumers[0].name,
                format!("layer{stage}.{block}.conv2")
            );
            // conv weight + bn scale, shift, mean, var
            assert_eq!(conv1.params.len(), 5);
        }
    }
    // The three stages' streams are one group: the option-A shortcut (a spatial Slice, then a
    // Pad of 8 and 16 zero channels on each side) puts stage 1's 16 channels in the middle of
    // stage 2's 32 and those in the middle of stage 3's 64: 16 + 16 + 32 = 64 channels.
    let stream = a.prunable("conv1").unwrap();
    assert!(stream.stream);
    assert_eq!(stream.channels, 64);
    assert_eq!(
        stream.producers.len(),
        28,
        "the stem and every block's conv2"
    );
    assert_eq!(
        stream.consumers.len(),
        28,
        "every block's conv1 and the classifier"
    );
    let linear = stream.consumers.last().unwrap();
    assert_eq!(linear.name, "linear");
    assert_eq!(linear.kind, ConsumerKind::FlattenLinear);
    let at = |name: &str| {
        let v = graph.value_id(name).unwrap();
        stream.positions(v).unwrap().to_vec()
    };
    let s1 = at("layer1.8.relu2.out");
    let s2 = at("layer2.8.relu2.out");
    let s3 = at("layer3.8.relu2.out");
    assert_eq!((s1.len(), s2.len(), s3.len()), (16, 32, 64));
    assert_eq!(
        s2[8..24],
        s1[..],
        "stage 1 sits at channels 8..24 of stage 2"
    );
    assert_eq!(
        s3[16..48],
        s2[..],
        "stage 2 sits at channels 16..48 of stage 3"
    );
    let mut all = s3.clone();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..64).collect::<Vec<_>>(),
        "each channel once in stage 3"
    );
    assert_eq!(
        s1,
        (0..16).collect::<Vec<_>>(),
        "numbered from the stem's outputs"
    );
    let pads = stream
        .edits
        .iter()
        .filter(|e| matches!(e, subprune::analysis::ChannelEdit::ChannelPad { .. }))
        .count();
    assert_eq!(pads, 2);
    // Restricted to block-internal groups, the stream's producers are left whole.
    let internal = analyze(graph).restrict(graph, subprune::analysis::GroupScope::Internal);
    assert_eq!(internal.prunable.len(), 27);
    assert!(internal
        .coupled("layer2.3.conv2")
        .unwrap()
        .reason
        .contains("stream"));
    assert!(a.coupled("linear").unwrap().reason.contains("graph output"));
    assert_eq!(a.coupled.len(), 1);
    let summary = subprune::analysis::summary::summarize(graph);
    assert!(
        summary.prunable_conv_share >= 0.9,
        "{}",
        summary.prunable_conv_share
    );
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
fn mobilenetv2_expand_depthwise_project_groups_and_residual_streams() {
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
                assert_eq!(e.depthwise(), [i], "{}", expand.name);
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
    // The project convs (and 1×1 shortcut convs) that write into one residual stream form one
    // group with every conv that reads the stream; no producer is left whole but the classifier.
    let streams: Vec<_> = a.prunable.iter().filter(|g| g.stream).collect();
    assert_eq!(
        streams.len(),
        7,
        "{:?}",
        streams.iter().map(|g| &g.name).collect::<Vec<_>>()
    );
    let s = a.prunable("/layers/layers.6/conv3/Conv").unwrap();
    assert_eq!(s.producers.len(), 4);
    assert_eq!(s.channels, 64);
    assert_eq!(
        a.coupled.len(),
        1 + 17,
        "the classifier and the 17 depthwise convs"
    );
    // The stem feeds block 0's expand conv and its 1×1 shortcut conv: one prunable layer with two
    // consumers (statistics summed, selection shared).
    let stem = a.prunable("/conv1/Conv").unwrap();
    assert_eq!(stem.consumers.len(), 2);
    assert!(stem.consumers.iter().all(|c| c.kind == ConsumerKind::Conv));
    assert!(stem.depthwise().is_empty());
    assert!(a.prunable("/conv2/Conv").is_some());
    // The stem, the 17 expand convs, the last 1×1 conv and the streams (7 of them: one per
    // stage of equal width, each of the blocks' project convs).
    assert_eq!(a.prunable.len(), 19 + 7);
    // Every conv's output channels can shrink with some group (issue 22: ≥ 90%).
    let summary = subprune::analysis::summary::summarize(&model.graph);
    assert!(
        summary.prunable_conv_share >= 0.9,
        "{}",
        summary.prunable_conv_share
    );
}
