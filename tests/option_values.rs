//! Option values and header fields that used to get confusing answers (issue 24, item 10):
//! negative numbers reach the range checks instead of clap's "unexpected argument '-0'",
//! `select --keep 0` names no absurd channel count, a `.npy` header that repeats a key is
//! refused, and a deeply nested graph attribute gets a short error line.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/raw_onnx.rs"]
mod graph_builder;

fn fixture(name: &str) -> String {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    p.to_str().unwrap().to_string()
}

fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_subprune"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn negative_values_reach_the_range_checks() {
    let (model, calib) = (fixture("mnist_cnn.onnx"), fixture("mnist_calib_512.npy"));
    let out = std::env::temp_dir().join(format!("subprune-neg-{}.onnx", std::process::id()));
    let out = out.to_str().unwrap();
    for (flag, value, expect) in [
        ("--keep-fraction", "-0.1", "must be in (0, 1]"),
        ("--ridge", "-1", "≥ 0"),
    ] {
        let stderr = refused(&[
            "prune",
            &model,
            "--calib",
            &calib,
            "--out",
            out,
            "--backend",
            "cpu",
            flag,
            value,
        ]);
        assert!(
            stderr.contains(expect) && !stderr.contains("unexpected argument"),
            "{flag} {value}: {stderr}"
        );
    }
    assert!(!Path::new(out).exists());
}

#[test]
fn select_keep_zero_names_no_absurd_channel_count() {
    let stderr = refused(&[
        "select",
        "--inputs",
        &fixture("mnist_calib_512.npy"),
        "--weight",
        &fixture("mnist_calib_512.npy"),
        "--keep",
        "0",
    ]);
    assert!(stderr.contains("--keep 0"), "{stderr}");
    assert!(!stderr.contains(&usize::MAX.to_string()), "{stderr}");
}

/// The library's file of two float32 values with its header dict replaced by `dict` (written
/// over the padding, so the header keeps its length).
fn npy(dict: &str) -> Vec<u8> {
    let tensor = subprune::Tensor::new(vec![2], vec![0.0; 2]).unwrap();
    let mut bytes = subprune::npy::to_bytes(&tensor);
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = &mut bytes[10..10 + header_len - 1];
    assert!(dict.len() <= header.len(), "{dict} does not fit the header");
    header.fill(b' ');
    header[..dict.len()].copy_from_slice(dict.as_bytes());
    bytes
}

#[test]
fn a_header_that_repeats_a_key_is_refused() {
    let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    assert!(subprune::npy::parse_f32(Path::new("ok.npy"), &npy(ok)).is_ok());
    for dict in [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (1,), }",
        "{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': False, \"fortran_order\": True, 'shape': (2,), }",
    ] {
        let e = subprune::npy::parse_f32(Path::new("dup.npy"), &npy(dict)).unwrap_err();
        assert!(e.to_string().contains("times"), "{dict}: {e}");
    }
}

#[test]
fn a_deeply_nested_graph_attribute_gets_a_short_error() {
    use prost::Message;
    let model = subprune::onnx::proto::ModelProto {
        ir_version: Some(8),
        graph: graph_builder::nested_graph(150),
        ..Default::default()
    };
    let e = subprune::onnx::load_bytes(Path::new("deep.onnx"), &model.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(e.len() < 400, "{} bytes: {e}", e.len());
    assert!(
        e.contains("deep.onnx") && e.contains("recursion limit"),
        "{e}"
    );
}
