//! Inputs and outputs that are not regular files (Linux: FIFOs, devices, sockets, links to
//! them), and external data that is a symbolic link: refused with a message naming the file,
//! without blocking, without reading without end, and without replacing the special file.

mod common;

use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::Path;

use common::files::{command, copy_fixture, mkfifo, output_within, refused, scratch};
use subprune::onnx::{ExternalData, SaveOptions};

/// mnist_cnn with its weights in `weights.bin` beside it, in `dir`; returns the model's path.
fn external_model(dir: &Path) -> std::path::PathBuf {
    let model = subprune::onnx::load(common::fixture("mnist_cnn.onnx")).unwrap();
    let options = SaveOptions {
        external_data: ExternalData::File {
            location: "weights.bin".into(),
            threshold: 1024,
        },
    };
    let path = dir.join("ext.onnx");
    subprune::onnx::save(&model, &path, &options).unwrap();
    path
}

#[test]
fn outputs_that_are_fifos_sockets_or_links_to_devices_are_refused_and_left_alone() {
    let dir = scratch("special-outputs");
    copy_fixture("mnist_cnn.onnx", &dir);
    copy_fixture("mnist_calib_512.npy", &dir);
    mkfifo(&dir.join("fifo"));
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap();
    symlink("/dev/null", dir.join("null-link")).unwrap();
    for (name, kind) in [
        ("fifo", "FIFO"),
        ("socket", "socket"),
        ("null-link", "character device"),
    ] {
        for option in ["--out", "--report"] {
            let mut cmd = command();
            cmd.current_dir(&dir)
                .args(["prune", "mnist_cnn.onnx", "--calib", "mnist_calib_512.npy"])
                .args(["--calib-images", "64"]);
            match option {
                "--out" => cmd.args(["--out", name]),
                _ => cmd.args(["--out", "o.onnx", "--report", name]),
            };
            refused(&output_within(&mut cmd, 120), &[name, kind, option]);
        }
    }
    let types = |n: &str| std::fs::symlink_metadata(dir.join(n)).unwrap().file_type();
    assert!(types("fifo").is_fifo());
    assert!(types("socket").is_socket());
    assert!(types("null-link").is_symlink());
    assert!(!dir.join("o.onnx").exists());
}

#[test]
fn inputs_that_are_fifos_are_refused_without_blocking() {
    let dir = scratch("fifo-inputs");
    copy_fixture("mnist_cnn.onnx", &dir);
    copy_fixture("mnist_test_u8.npy", &dir);
    copy_fixture("mnist_test_labels.npy", &dir);
    mkfifo(&dir.join("fifo"));
    let eval = |model: &str, data: &str, labels: &str| {
        let mut cmd = command();
        cmd.current_dir(&dir)
            .args(["eval", model, "--data", data, "--labels", labels]);
        output_within(&mut cmd, 60)
    };
    let data = "mnist_test_u8.npy";
    let labels = "mnist_test_labels.npy";
    refused(&eval("fifo", data, labels), &["fifo", "FIFO"]);
    refused(&eval("mnist_cnn.onnx", "fifo", labels), &["fifo", "FIFO"]);
    refused(&eval("mnist_cnn.onnx", data, "fifo"), &["fifo", "FIFO"]);
    // A FIFO as the model's external data file.
    let ext = external_model(&dir);
    std::fs::remove_file(dir.join("weights.bin")).unwrap();
    mkfifo(&dir.join("weights.bin"));
    let ext = ext.to_str().unwrap();
    refused(&eval(ext, data, labels), &["weights.bin", "FIFO"]);
}

#[test]
fn inputs_that_are_devices_are_refused_before_reading() {
    let dir = scratch("device-inputs");
    symlink("/dev/zero", dir.join("zero.onnx")).unwrap();
    symlink("/dev/zero", dir.join("zero.npy")).unwrap();
    assert!(matches!(
        subprune::onnx::load(dir.join("zero.onnx")),
        Err(subprune::Error::InvalidArgument(m)) if m.contains("character device")
    ));
    let err = subprune::npy::read_any(dir.join("zero.npy")).unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");
    let err = subprune::npy::read_f32(dir.join("zero.npy")).unwrap_err();
    assert!(err.to_string().contains("character device"), "{err}");
}

#[test]
fn external_data_through_a_symbolic_link_is_refused() {
    let dir = scratch("external-links");
    let outside = scratch("external-links-outside");
    let model = external_model(&dir);
    // The data file moved outside the model's folder, a link left in its place.
    std::fs::rename(dir.join("weights.bin"), outside.join("weights.bin")).unwrap();
    symlink(outside.join("weights.bin"), dir.join("weights.bin")).unwrap();
    let err = subprune::onnx::load(&model).unwrap_err().to_string();
    assert!(
        err.contains("symbolic link") && err.contains("weights.bin"),
        "{err}"
    );
    // A link to a file inside the folder is refused too (as onnx's loader does).
    std::fs::remove_file(dir.join("weights.bin")).unwrap();
    std::fs::rename(outside.join("weights.bin"), dir.join("real.bin")).unwrap();
    symlink("real.bin", dir.join("weights.bin")).unwrap();
    let err = subprune::onnx::load(&model).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    // A folder on the way that is a link.
    let nested = scratch("external-links-nested");
    let model = subprune::onnx::load(common::fixture("mnist_cnn.onnx")).unwrap();
    std::fs::create_dir(nested.join("real")).unwrap();
    symlink("real", nested.join("sub")).unwrap();
    let options = SaveOptions {
        external_data: ExternalData::File {
            location: "sub/w.bin".into(),
            threshold: 1024,
        },
    };
    subprune::onnx::save(&model, nested.join("m.onnx"), &options).unwrap();
    let err = subprune::onnx::load(nested.join("m.onnx")).unwrap_err();
    assert!(err.to_string().contains("symbolic link") && err.to_string().contains("sub/"));
}

/// The data file is read by each tensor's offset and length: a data file far larger than its
/// tensors (sparse, 64 GiB) loads at once, and a length past the file's end is refused before
/// anything that size is allocated.
#[test]
fn external_data_is_read_by_offset_and_length_only() {
    let dir = scratch("external-huge");
    let model = external_model(&dir);
    let reference = subprune::onnx::load(&model).unwrap();
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("weights.bin"))
        .unwrap();
    data.set_len(64 << 30).unwrap();
    let loaded = subprune::onnx::load(&model).unwrap();
    assert_eq!(loaded.graph.values.len(), reference.graph.values.len());
    let consts = |m: &subprune::onnx::OnnxModel| {
        m.graph
            .values
            .iter()
            .map(|v| v.constant.clone())
            .collect::<Vec<_>>()
    };
    assert!(consts(&loaded) == consts(&reference));
    data.set_len(100).unwrap();
    let err = subprune::onnx::load(&model).unwrap_err().to_string();
    assert!(
        err.contains("past the end of the file (100 bytes)"),
        "{err}"
    );
}
