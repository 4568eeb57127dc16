//! `save` with external data writes the model and its data file as a pair: every target is
//! checked before either is written, and both are written to temporaries before either is
//! renamed, so a refusal leaves the previous pair intact.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::files::scratch;
use subprune::onnx::{ExternalData, SaveOptions};

fn external(threshold: usize) -> SaveOptions {
    SaveOptions {
        external_data: ExternalData::File {
            location: "o.onnx.data".into(),
            threshold,
        },
    }
}

#[test]
fn a_refused_model_path_leaves_the_previous_pair_intact() {
    let dir = scratch("atomic-pair");
    let model = subprune::onnx::load(common::fixture("mnist_cnn.onnx")).unwrap();
    let out = dir.join("o.onnx");
    subprune::onnx::save(&model, &out, &external(1024)).unwrap();
    let old_model = std::fs::read(&out).unwrap();
    let old_data = std::fs::read(dir.join("o.onnx.data")).unwrap();
    // The model file read-only: the save is refused. A smaller threshold lays out a different
    // data file, which must not replace the old one.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o444)).unwrap();
    let err = subprune::onnx::save(&model, &out, &external(64)).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), old_model);
    assert_eq!(std::fs::read(dir.join("o.onnx.data")).unwrap(), old_data);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?}");
    // The old pair still loads, and the new one is written once the model is writable.
    subprune::onnx::load(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    subprune::onnx::save(&model, &out, &external(64)).unwrap();
    assert_ne!(std::fs::read(dir.join("o.onnx.data")).unwrap(), old_data);
    subprune::onnx::load(&out).unwrap();
}
