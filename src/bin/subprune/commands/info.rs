//! `subprune info`: what an ONNX model holds, and which of its layers can be pruned.

use crate::args::InfoArgs;

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let model = super::load_model(&args.model, &args.shapes, None)?;
    let summary = subprune::analysis::summary::summarize(&model.graph);
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    outln!(
        "{}: opset {}, {} nodes, producer {}",
        args.model.display(),
        model.opset,
        summary.nodes,
        model.producer()
    );
    for p in &summary.inputs {
        outln!("input  {} {}", p.name, p.shape);
    }
    for p in &summary.outputs {
        outln!("output {} {}", p.name, p.shape);
    }
    let ops: Vec<String> = summary
        .op_counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    outln!("ops: {}", ops.join(", "));
    outln!("parameters: {}", summary.parameters);
    outln!(
        "FLOPs per image: {} ({:.2} MFLOPs)",
        summary.flops_per_image,
        summary.flops_per_image as f64 / 1e6
    );
    outln!("channel pairs (producer -> consumer: channels x columns per channel, via):");
    for p in &summary.pairs {
        outln!(
            "  {} -> {}: {} x {}{}{}",
            p.producer,
            p.consumer,
            p.channels,
            p.columns_per_channel,
            if p.via.is_empty() {
                String::new()
            } else {
                format!(", via {}", p.via.join(" > "))
            },
            if p.coupled {
                " (coupled by a residual)"
            } else {
                ""
            }
        );
    }
    let ch = &summary.channels;
    outln!(
        "prunable layers ({}): producer: channels -> consumers (columns per channel)",
        ch.prunable.len()
    );
    for l in &ch.prunable {
        let consumers: Vec<String> = l
            .consumers
            .iter()
            .map(|c| format!("{} ({})", c.name, c.columns_per_channel))
            .collect();
        outln!("  {}: {} -> {}", l.name, l.channels, consumers.join(", "));
    }
    outln!("coupled layers, left whole ({}):", ch.coupled.len());
    for l in &ch.coupled {
        outln!("  {}: {} channels: {}", l.name, l.channels, l.reason);
    }
    Ok(())
}
