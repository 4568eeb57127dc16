//! A bounded fuzzing harness for the ONNX reader, as `fuzz_npy.rs` is for `.npy`: small valid
//! models (a Conv → element-wise chain → Gemm network) decoded, mutated where the structure is
//! (initializer dims, attributes, raw data lengths and types, external data fields, node inputs,
//! op types, graph input dims, opset), encoded again, sometimes also mutated byte by byte. Every
//! input must load or give an error, never a panic; no single allocation may exceed what the
//! input's size justifies; a model that loads must also summarise and plan.
//!
//! CI runs `SUBPRUNE_FUZZ_CASES` inputs (default 2 000); the long run:
//! `SUBPRUNE_FUZZ_CASES=1000000 SUBPRUNE_FUZZ_SEED=1 cargo test --release --test fuzz_onnx -- --nocapture`.
//! Figures are in docs/FUZZING.md.

use std::sync::atomic::Ordering;

use prost::Message;
use subprune::onnx::proto::{
    self, attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto,
    type_proto, AttributeProto, StringStringEntryProto,
};
use subprune::rng::Rng;

#[path = "common/fuzz_alloc.rs"]
mod fuzz_support;
#[path = "common/raw_onnx.rs"]
mod graph_builder;
use fuzz_support::{env_or, LARGEST, TRACK};

const EXTREMES: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    -2,
    7,
    1 << 31,
    1 << 40,
    1 << 62,
    i64::MAX,
    i64::MIN,
];

const ATTRIBUTES: &[&str] = &[
    "pads",
    "strides",
    "kernel_shape",
    "dilations",
    "axis",
    "group",
    "transA",
    "transB",
    "auto_pad",
    "ceil_mode",
    "allowzero",
    "value",
    "value_ints",
    "value_float",
    "mode",
    "epsilon",
    "alpha",
    "count_include_pad",
];

/// Op types a mutation may write: every supported one, and one the importer refuses.
fn ops() -> Vec<&'static str> {
    let mut ops = subprune::onnx::supported::SUPPORTED_OPS.to_vec();
    ops.push("Loop");
    ops
}

const LOCATIONS: &[&str] = &[
    "w.bin",
    "w.bin",
    "../w.bin",
    "/etc/hostname",
    "",
    "missing.bin",
    "w.bin/x",
    ".",
];

const NUMBERS: &[&str] = &[
    "0",
    "4",
    "8",
    "60",
    "64",
    "-1",
    "abc",
    "18446744073709551615",
    "99999999999999999999",
];

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[below(rng, items.len())]
}

fn extreme(rng: &mut Rng) -> i64 {
    *pick(rng, EXTREMES)
}

fn random_attribute(rng: &mut Rng) -> AttributeProto {
    let mut a = AttributeProto {
        name: Some(pick(rng, ATTRIBUTES).to_string()),
        ..Default::default()
    };
    match below(rng, 7) {
        0 => {
            a.r#type = Some(AttributeType::Int as i32);
            a.i = Some(extreme(rng));
        }
        1 | 2 => {
            a.r#type = Some(AttributeType::Ints as i32);
            a.ints = (0..below(rng, 6)).map(|_| extreme(rng)).collect();
        }
        3 => {
            a.r#type = Some(AttributeType::Float as i32);
            a.f = Some(*pick(rng, &[0.0, -1.0, f32::NAN, f32::INFINITY, 1e30]));
        }
        4 => {
            a.r#type = Some(AttributeType::String as i32);
            a.s = Some(
                pick(rng, &["SAME_UPPER", "VALID", "reflect", "x"])
                    .as_bytes()
                    .to_vec(),
            );
        }
        5 => {
            a.r#type = Some(AttributeType::Tensor as i32);
            a.t = Some(proto::TensorProto {
                dims: (0..below(rng, 3)).map(|_| extreme(rng)).collect(),
                data_type: Some(*pick(rng, &[1, 7, 6, 11, 0])),
                raw_data: Some(vec![0; below(rng, 24)]),
                ..Default::default()
            });
        }
        _ => {
            // A graph attribute nested `levels` deep: past the decoder's recursion limit (100),
            // the error must still be one short line.
            a.r#type = Some(AttributeType::Graph as i32);
            let levels = *pick(rng, &[1usize, 3, 60, 130]);
            a.g = graph_builder::nested_graph(levels);
        }
    }
    a
}

fn set_external(rng: &mut Rng, t: &mut proto::TensorProto) {
    t.data_location = Some(DataLocation::External as i32);
    t.raw_data = None;
    t.float_data.clear();
    let entry = |key: &str, value: &str| StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    };
    let location = pick(rng, LOCATIONS).to_string();
    t.external_data = vec![entry("location", &location)];
    if !rng.next_u64().is_multiple_of(3) {
        let offset = pick(rng, NUMBERS).to_string();
        t.external_data.push(entry("offset", &offset));
    }
    if !rng.next_u64().is_multiple_of(3) {
        let length = pick(rng, NUMBERS).to_string();
        t.external_data.push(entry("length", &length));
    }
}

/// One structure-aware mutation of `model`.
fn mutate_structure(rng: &mut Rng, model: &mut proto::ModelProto) {
    let graph = model.graph.as_mut().expect("a graph");
    let names: Vec<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().chain(&n.input).cloned())
        .collect();
    let inits = graph.initializer.len();
    let nodes = graph.node.len();
    match below(rng, 10) {
        0 => {
            let t = &mut graph.initializer[below(rng, inits)];
            match below(rng, 3) {
                0 if !t.dims.is_empty() => {
                    let i = below(rng, t.dims.len());
                    t.dims[i] = extreme(rng);
                }
                1 => t.dims.push(extreme(rng)),
                _ => {
                    t.dims.pop();
                }
            }
        }
        1 | 2 => {
            let node = &mut graph.node[below(rng, nodes)];
            let a = random_attribute(rng);
            node.attribute.retain(|x| x.name != a.name);
            node.attribute.push(a);
        }
        3 => {
            // Raw data of another length or type.
            let t = &mut graph.initializer[below(rng, inits)];
            let mut raw: Vec<u8> = t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect();
            t.float_data.clear();
            match below(rng, 3) {
                0 => raw.truncate(below(rng, raw.len() + 1)),
                1 => raw.extend((0..below(rng, 9)).map(|_| rng.next_u64() as u8)),
                _ => t.data_type = Some(*pick(rng, &[1, 6, 7, 10, 11, 0, 99])),
            }
            t.raw_data = Some(raw);
        }
        4 => {
            let i = below(rng, inits);
            set_external(rng, &mut graph.initializer[i]);
        }
        5 => {
            let node = &mut graph.node[below(rng, nodes)];
            let own = node.output.first().cloned().unwrap_or_default();
            let replacement = match below(rng, 4) {
                0 => String::new(),
                1 => "undefined".to_string(),
                2 => own,
                _ => pick(rng, &names).clone(),
            };
            if node.input.is_empty() || rng.next_u64().is_multiple_of(4) {
                node.input.push(replacement);
            } else {
                let i = below(rng, node.input.len());
                node.input[i] = replacement;
            }
        }
        6 => {
            let node = &mut graph.node[below(rng, nodes)];
            node.op_type = Some(pick(rng, &ops()).to_string());
        }
        7 => {
            let Some(type_proto::Value::TensorType(t)) = graph.input[0]
                .r#type
                .as_mut()
                .and_then(|t| t.value.as_mut())
            else {
                return;
            };
            let dims = &mut t.shape.as_mut().expect("a shape").dim;
            let value = tensor_shape_proto::dimension::Value::DimValue(extreme(rng));
            match below(rng, 3) {
                0 => dims.push(tensor_shape_proto::Dimension {
                    value: Some(value),
                    ..Default::default()
                }),
                1 => {
                    dims.pop();
                }
                _ => {
                    let i = below(rng, dims.len());
                    dims[i].value = Some(value);
                }
            }
        }
        8 => {
            // Remove or duplicate a node.
            let i = below(rng, nodes);
            if rng.next_u64().is_multiple_of(2) && nodes > 1 {
                graph.node.remove(i);
            } else {
                let copy = graph.node[i].clone();
                graph.node.push(copy);
            }
        }
        _ => {
            let version = *pick(rng, &[9, 11, 13, 18, 21, 22, -1]);
            model.opset_import[0].version = Some(version);
        }
    }
}

/// Byte-level damage to an encoded model.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let len = bytes.len().max(1);
    match below(rng, 4) {
        0 if !bytes.is_empty() => {
            let i = below(rng, len);
            bytes[i] ^= 1 << below(rng, 8);
        }
        1 if !bytes.is_empty() => {
            let i = below(rng, len);
            bytes[i] = rng.next_u64() as u8;
        }
        2 => bytes.truncate(below(rng, len)),
        _ => {
            let at = below(rng, len).min(bytes.len());
            let extra: Vec<u8> = (0..below(rng, 12)).map(|_| rng.next_u64() as u8).collect();
            bytes.splice(at..at, extra);
        }
    }
}

#[test]
fn onnx_reader_survives_mutated_models() {
    let cases = env_or("SUBPRUNE_FUZZ_CASES", 2_000);
    let seed = env_or("SUBPRUNE_FUZZ_SEED", 11);
    let mut rng = Rng::new(seed);
    let dir = std::env::temp_dir().join(format!("subprune-fuzz-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // An external data file that valid references can point at (64 bytes of small floats).
    let data: Vec<u8> = (0..16)
        .flat_map(|i| (i as f32 / 16.0).to_le_bytes())
        .collect();
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    let model_path = dir.join("case.onnx");
    let bases: Vec<proto::ModelProto> = [1, 3, 6]
        .iter()
        .map(|&n| proto::ModelProto::decode(graph_builder::chain_model(n, n == 6).as_slice()))
        .collect::<Result<_, _>>()
        .unwrap();
    let start = std::time::Instant::now();
    let (mut loaded, mut refused) = (0u64, 0u64);
    let mut largest_seen = 0usize;
    for case in 0..cases {
        let mut model = pick(&mut rng, &bases).clone();
        for _ in 0..1 + below(&mut rng, 4) {
            mutate_structure(&mut rng, &mut model);
        }
        let mut bytes = model.encode_to_vec();
        if rng.next_u64().is_multiple_of(4) {
            mutate_bytes(&mut rng, &mut bytes);
        }
        LARGEST.store(0, Ordering::Relaxed);
        TRACK.store(true, Ordering::Relaxed);
        let result = std::panic::catch_unwind(|| {
            let m = subprune::onnx::load_bytes(&model_path, &bytes)?;
            let summary = subprune::analysis::summary::summarize(&m.graph);
            let plan = subprune::exec::plan::Plan::new(&m.graph).map(|_| ());
            Ok::<_, subprune::Error>((summary.nodes, plan))
        });
        TRACK.store(false, Ordering::Relaxed);
        let largest = LARGEST.load(Ordering::Relaxed);
        largest_seen = largest_seen.max(largest);
        let result = result.unwrap_or_else(|_| {
            std::fs::write(dir.join(format!("panic-{case}.onnx")), &bytes).ok();
            panic!(
                "case {case} (seed {seed}) panics; input kept in {}",
                dir.display()
            )
        });
        // The decoded protobuf, its decoded tensors and the IR are each proportional to the
        // input (and the 64-byte data file); bookkeeping adds a few pages.
        assert!(
            largest <= 16 * bytes.len() + (1 << 16),
            "case {case} (seed {seed}): an allocation of {largest} bytes for a {}-byte input",
            bytes.len()
        );
        match result {
            Ok(_) => loaded += 1,
            Err(e) => {
                refused += 1;
                let text = e.to_string();
                assert!(
                    text.lines().next().is_some_and(|l| l.len() <= 600),
                    "case {case}: an error line of {} bytes: {}",
                    text.len(),
                    &text[..text.len().min(300)]
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "fuzz_onnx: {cases} inputs (seed {seed}) in {:.2} s: {loaded} loaded, {refused} refused, \
         0 panics, largest allocation {largest_seen} bytes",
        start.elapsed().as_secs_f64()
    );
}
