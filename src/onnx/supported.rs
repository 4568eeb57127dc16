//! Which ONNX ops the importer converts, and the one message that lists every op of a model it
//! does not (with counts and first nodes) before any conversion.

use super::proto;

/// The ONNX ops (default domain) the importer converts, as `import.rs`'s `convert` matches them
/// (with `import/compute.rs`), and those it folds into constants at load where their inputs are
/// known ([`FOLDED_OPS`]). `Upsample` is read as `Resize`.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Concat",
    "Slice",
    "Pad",
    "Dropout",
    "Identity",
    "Constant",
    "Softmax",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Gather",
    "Expand",
    "Upsample",
    // The compute ops of `import/compute.rs`.
    "Split",
    "Transpose",
    "Resize",
    "Sum",
    "Max",
    "Min",
    "ConvTranspose",
    "ReduceMean",
    "ReduceMax",
    "ReduceSum",
    "GlobalMaxPool",
    "LRN",
    "Tanh",
    "Exp",
    "Softplus",
    "Sqrt",
    "Erf",
    "Pow",
];

/// Ops supported only where their inputs are known at load (constants, shapes), folded into
/// constants by [`super::fold`]; on data they are refused with the node named. (Transpose and
/// Sqrt are folded too where their inputs are known, and run on data.)
pub const FOLDED_OPS: &[&str] = &[
    "Shape",
    "ConstantOfShape",
    "Range",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Not",
    "Neg",
];

/// Every op of `g` the importer does not convert, in one message: each with its count and first
/// node, and what to do (`None` when all are supported). One error for the whole model rather
/// than one per run.
pub(crate) fn unsupported_ops(g: &proto::GraphProto) -> Option<String> {
    let mut found: Vec<(String, usize, String)> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let op = n.op_type.as_deref().unwrap_or("");
        let domain = n.domain.as_deref().unwrap_or("");
        let known = matches!(domain, "" | "ai.onnx")
            && (SUPPORTED_OPS.contains(&op) || FOLDED_OPS.contains(&op));
        if known {
            continue;
        }
        let label = if matches!(domain, "" | "ai.onnx") {
            op.to_string()
        } else {
            format!("{domain}.{op}")
        };
        match found.iter_mut().find(|(l, _, _)| *l == label) {
            Some(entry) => entry.1 += 1,
            None => found.push((label, 1, n.name.clone().unwrap_or_else(|| format!("#{i}")))),
        }
    }
    if found.is_empty() {
        return None;
    }
    let list: Vec<String> = found
        .iter()
        .map(|(op, count, first)| format!("{op} ×{count} (first: '{first}')"))
        .collect();
    // The list of what is supported on a line of its own: the first line stays short.
    Some(format!(
        "{} op type{} not supported: {}. Export the model without them (e.g. a plain activation \
         for a fused one)\nsupported ops: {}; folded where their inputs are known at load: {} \
         (docs/OPS.md)",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        list.join(", "),
        SUPPORTED_OPS.join(", "),
        FOLDED_OPS.join(", ")
    ))
}
