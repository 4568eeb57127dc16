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
    let ch = &summary.channels;
    outln!(
        "channel groups ({} prunable; their producers hold {:.1}% of the conv weights, {:.1}% of all weights):",
        summary.groups.len(),
        100.0 * summary.prunable_conv_share,
        100.0 * summary.prunable_weight_share
    );
    for g in &summary.groups {
        outln!("  {}", group_line(g));
    }
    outln!("left whole ({} producers):", ch.coupled.len());
    for l in &ch.coupled {
        outln!("  {}: {} channels: {}", l.name, l.channels, l.reason);
    }
    Ok(())
}

/// `NAME: C channels, producers …, consumers …, depthwise …, maps …` on one line, long lists
/// cut to their ends.
fn group_line(g: &subprune::analysis::summary::GroupSummary) -> String {
    fn list(items: &[String]) -> String {
        match items.len() {
            0..=3 => items.join(", "),
            n => format!("{}, {}, … {} ({n})", items[0], items[1], items[n - 1]),
        }
    }
    let consumers: Vec<String> = g
        .consumers
        .iter()
        .map(|(name, cols)| format!("{name} ({cols})"))
        .collect();
    let mut line = format!(
        "{}: {} channels{}; producers {}; consumers {}",
        g.name,
        g.channels,
        if g.stream { " (stream)" } else { "" },
        list(&g.producers),
        list(&consumers)
    );
    if g.depthwise > 0 {
        line.push_str(&format!("; depthwise {}", g.depthwise));
    }
    if !g.maps.is_empty() {
        let maps: Vec<String> = g.maps.iter().map(|(k, v)| format!("{k} {v}")).collect();
        line.push_str(&format!("; maps {}", maps.join(", ")));
    }
    line
}
