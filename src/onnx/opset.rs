//! Old opsets (7–12) normalised at import into the one form the converter reads: parameters that
//! moved from attributes to inputs (Slice < 10, Pad and Clip < 11, Split, Unsqueeze and Squeeze
//! < 13) become constant inputs, `Upsample` (7–9) and `Resize`-10 become `Resize` in its 11+ form,
//! and BatchNormalization's `spatial = 0` (< 9) is refused. The written model keeps the file's
//! nodes as they were: only the IR sees the normalised form.

use std::borrow::Cow;

use super::export::attr_string;
use super::proto;
use crate::ir::{ConstData, Constant};

/// Opsets older than this are refused (Reshape's shape was an attribute before 5, and the
/// other ops changed semantics before 7).
pub const OLDEST_OPSET: i64 = 7;

#[derive(Debug)]
/// A node in its newest form, with the constants its moved parameters became (name, value): the
/// names are `<first output>::<parameter>`.
pub struct Normalised<'a> {
    /// The node, borrowed when nothing changed.
    pub node: Cow<'a, proto::NodeProto>,
    /// New constant inputs.
    pub constants: Vec<(String, Constant)>,
}

fn ints(v: &[i64]) -> Constant {
    Constant {
        dims: vec![v.len()],
        data: ConstData::I64(v.to_vec()),
    }
}

fn floats(dims: Vec<usize>, v: Vec<f32>) -> Constant {
    Constant {
        dims,
        data: ConstData::F32(v),
    }
}

struct Edit<'a> {
    node: proto::NodeProto,
    constants: Vec<(String, Constant)>,
    original: &'a proto::NodeProto,
}

impl Edit<'_> {
    /// Removes attribute `name` and returns it.
    fn take(&mut self, name: &str) -> Option<proto::AttributeProto> {
        let at = self
            .node
            .attribute
            .iter()
            .position(|a| a.name.as_deref() == Some(name))?;
        Some(self.node.attribute.remove(at))
    }

    /// Sets input `i` to a new constant named after the node's output (or to "" for `None`).
    fn input(&mut self, i: usize, what: &str, value: Option<Constant>) {
        while self.node.input.len() <= i {
            self.node.input.push(String::new());
        }
        self.node.input[i] = match value {
            None => String::new(),
            Some(c) => {
                let out = self.original.output.first().map_or("", |s| s.as_str());
                let name = format!("{out}::{what}");
                self.constants.push((name.clone(), c));
                name
            }
        };
    }

    /// Moves an ints attribute to input `i` (left out when absent).
    fn ints_to_input(&mut self, attr: &str, i: usize) {
        if let Some(a) = self.take(attr) {
            self.input(i, attr, Some(ints(&a.ints)));
        }
    }
}

/// `node` in the form of the newest opset the converter reads, for a model of `opset`.
pub fn normalise(node: &proto::NodeProto, opset: i64) -> Result<Normalised<'_>, String> {
    let op = node.op_type.as_deref().unwrap_or("");
    let moves = match op {
        "Slice" => opset < 10,
        "Pad" | "Clip" => opset < 11,
        "Split" | "Unsqueeze" | "Squeeze" => opset < 13,
        "Upsample" => true,
        "Resize" => opset < 11,
        "BatchNormalization" => opset < 9,
        _ => false,
    };
    if !moves {
        return Ok(Normalised {
            node: Cow::Borrowed(node),
            constants: vec![],
        });
    }
    let mut e = Edit {
        node: node.clone(),
        constants: vec![],
        original: node,
    };
    match op {
        "Slice" => {
            let has = |n: &str| node.attribute.iter().any(|a| a.name.as_deref() == Some(n));
            if !has("starts") || !has("ends") {
                return Err("Slice (opset < 10) needs the attributes starts and ends".into());
            }
            e.node.input.truncate(1);
            e.ints_to_input("starts", 1);
            e.ints_to_input("ends", 2);
            e.ints_to_input("axes", 3);
        }
        "Pad" => {
            let pads = e
                .take("pads")
                .ok_or("Pad (opset < 11) needs the attribute pads")?;
            let value = e.take("value").and_then(|a| a.f).unwrap_or(0.0);
            e.node.input.truncate(1);
            e.input(1, "pads", Some(ints(&pads.ints)));
            e.input(2, "value", Some(floats(vec![], vec![value])));
        }
        "Clip" => {
            let bound = |a: Option<proto::AttributeProto>| a.and_then(|a| a.f);
            let (min, max) = (bound(e.take("min")), bound(e.take("max")));
            e.node.input.truncate(1);
            e.input(1, "min", min.map(|v| floats(vec![], vec![v])));
            e.input(2, "max", max.map(|v| floats(vec![], vec![v])));
        }
        "Split" => e.ints_to_input("split", 1),
        "Unsqueeze" | "Squeeze" => e.ints_to_input("axes", 1),
        "Upsample" | "Resize" => {
            let scales = match e.take("scales") {
                Some(a) => {
                    e.node.input.truncate(1);
                    Some(floats(vec![a.floats.len()], a.floats))
                }
                None => None,
            };
            let given = e.node.input.get(1).cloned().unwrap_or_default();
            e.node.input.truncate(1);
            e.input(1, "roi", None);
            match scales {
                Some(c) => e.input(2, "scales", Some(c)),
                None if !given.is_empty() => e.node.input.push(given),
                None => return Err(format!("{op} has no scales (attribute or input 1)")),
            }
            let mode = e
                .take("mode")
                .and_then(|a| a.s)
                .unwrap_or(b"nearest".to_vec());
            let mode = match mode.as_slice() {
                b"nearest" => "nearest",
                b"linear" | b"bilinear" => "linear",
                other => {
                    return Err(format!(
                        "{op} mode '{}' is not supported (nearest, linear are)",
                        String::from_utf8_lossy(other)
                    ))
                }
            };
            e.node.op_type = Some("Resize".into());
            e.node.attribute.push(attr_string("mode", mode));
            // Upsample and Resize-10 map output pixel x to input x / scale, nearest rounding down.
            e.node
                .attribute
                .push(attr_string("coordinate_transformation_mode", "asymmetric"));
            e.node.attribute.push(attr_string("nearest_mode", "floor"));
        }
        "BatchNormalization" => {
            if e.take("spatial").is_some_and(|a| a.i == Some(0)) {
                return Err(
                    "spatial = 0 (per-position statistics, opset < 9) is not supported".into(),
                );
            }
            e.take("is_test");
            e.take("consumed_inputs");
        }
        _ => unreachable!("listed above"),
    }
    Ok(Normalised {
        node: Cow::Owned(e.node),
        constants: e.constants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::attribute_proto::AttributeType;

    fn node(op: &str, inputs: &[&str], attribute: Vec<proto::AttributeProto>) -> proto::NodeProto {
        proto::NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".into()],
            attribute,
            ..Default::default()
        }
    }

    fn attr(n: &proto::NodeProto, name: &str) -> Option<String> {
        n.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .map(|a| String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[])).into_owned())
    }

    #[test]
    fn upsample_of_opsets_7_and_9_becomes_resize_11() {
        let scales = proto::AttributeProto {
            name: Some("scales".into()),
            r#type: Some(AttributeType::Floats as i32),
            floats: vec![1.0, 1.0, 2.0, 3.0],
            ..Default::default()
        };
        let v7 = node(
            "Upsample",
            &["x"],
            vec![scales, attr_string("mode", "nearest")],
        );
        let n = normalise(&v7, 7).unwrap();
        assert_eq!(n.node.op_type.as_deref(), Some("Resize"));
        assert_eq!(n.node.input, ["x", "", "y::scales"]);
        assert_eq!(n.constants[0].1, floats(vec![4], vec![1.0, 1.0, 2.0, 3.0]));
        assert_eq!(
            attr(&n.node, "coordinate_transformation_mode").as_deref(),
            Some("asymmetric")
        );
        assert_eq!(attr(&n.node, "nearest_mode").as_deref(), Some("floor"));
        // Opset 9: the scales are already an input; "bilinear" is Resize's "linear".
        let v9 = node(
            "Upsample",
            &["x", "s"],
            vec![attr_string("mode", "bilinear")],
        );
        let n = normalise(&v9, 9).unwrap();
        assert_eq!(n.node.input, ["x", "", "s"]);
        assert!(n.constants.is_empty());
        assert_eq!(attr(&n.node, "mode").as_deref(), Some("linear"));
        let cubic = node("Upsample", &["x", "s"], vec![attr_string("mode", "cubic")]);
        assert!(normalise(&cubic, 9).unwrap_err().contains("mode 'cubic'"));
        assert!(normalise(&node("Upsample", &["x"], vec![]), 7)
            .unwrap_err()
            .contains("no scales"));
    }

    #[test]
    fn attributes_move_to_inputs_only_below_the_opset_that_moved_them() {
        let axes = proto::AttributeProto {
            name: Some("axes".into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: vec![0, 2],
            ..Default::default()
        };
        let old = node("Unsqueeze", &["x"], vec![axes]);
        let n = normalise(&old, 12).unwrap();
        assert_eq!(n.node.input, ["x", "y::axes"]);
        assert!(n.node.attribute.is_empty());
        assert_eq!(n.constants, vec![("y::axes".to_string(), ints(&[0, 2]))]);
        let new = node("Unsqueeze", &["x", "a"], vec![]);
        assert!(matches!(
            normalise(&new, 13).unwrap().node,
            Cow::Borrowed(_)
        ));
        // Clip-6 without bounds: both inputs omitted.
        let clip = node("Clip", &["x"], vec![]);
        let n = normalise(&clip, 9).unwrap();
        assert_eq!(n.node.input, ["x", "", ""]);
    }
}
