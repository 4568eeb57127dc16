//! `subprune eval` and `subprune info` on the fixtures, and bad input: each a clear error, with
//! nothing written.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use prost::Message;
use subprune::exec::eval::evaluate;
use subprune::exec::run::{F32Images, U8Images};
use subprune::exec::CpuExecutor;
use subprune::npy::{self, NpyArray};
use subprune::onnx::{self, proto, ExternalData, SaveOptions};
use subprune::tensor::Tensor;

use common::{eval_args, fixture, i64_npy, npy_bytes, temp_dir};

fn subprune<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_subprune"))
        .env("SUBPRUNE_CACHE_DIR", env!("CARGO_TARGET_TMPDIR"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The fixture README's accuracies (onnxruntime), reproduced exactly from the raw u8 test sets.
#[test]
fn eval_reproduces_mnist_and_resnet56_accuracy() {
    let cases = [
        ("mnist_cnn.onnx", "mnist", "0.1307", "0.3081", 9905, 10000),
        (
            "resnet56_cifar10.onnx",
            "cifar10",
            "0.485,0.456,0.406",
            "0.229,0.224,0.225",
            789,
            846,
        ),
    ];
    for (model, set, mean, std, top1, images) in cases {
        let (ok, stdout, stderr) = subprune(&eval_args(
            &fixture(model),
            &fixture(&format!("{set}_test_u8.npy")),
            &fixture(&format!("{set}_test_labels.npy")),
            &["--mean", mean, "--std", std, "--json", "--backend", "cpu"],
        ));
        assert!(ok, "{stderr}");
        assert!(!stderr.contains("no --mean/--std"), "{stderr}");
        let v = json(&stdout);
        assert_eq!(v["images"], images, "{model}");
        assert_eq!(v["correct_top1"], top1, "{model}: {stdout}");
        assert!(v["correct_top5"].as_u64().unwrap() >= top1 as u64);
        assert!(v["images_per_second"].as_f64().unwrap() > 0.0);
        assert!(v["backend"].as_str().unwrap().starts_with("cpu"));
    }
}

/// uint8 images with neither --mean nor --std are only scaled to [0, 1]: `eval` says so (a model
/// trained on normalised images would otherwise score near chance with nothing saying why).
#[test]
fn eval_notes_uint8_data_without_normalisation() {
    let (ok, stdout, stderr) = subprune(&eval_args(
        &fixture("mnist_cnn.onnx"),
        &fixture("mnist_test_u8.npy"),
        &fixture("mnist_test_labels.npy"),
        &["--limit", "16", "--json", "--backend", "cpu"],
    ));
    assert!(ok, "{stderr}");
    assert_eq!(json(&stdout)["images"], 16);
    assert!(
        stderr.contains("mnist_test_u8.npy is uint8 and no --mean/--std were given"),
        "{stderr}"
    );
}

/// Labels of every little-endian integer dtype read as the same int64 values (negative ones
/// sign-extended); floats, other shapes, big-endian and out-of-range uint64 are refused by name.
#[test]
fn labels_of_any_integer_dtype_are_read() {
    let values: [i64; 4] = [0, 7, -1, 100];
    let path = Path::new("y.npy");
    for (descr, size) in [("|i1", 1), ("<i2", 2), ("<i4", 4), ("<i8", 8), ("=i4", 4)] {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| v.to_le_bytes()[..size].to_vec())
            .collect();
        let got = npy::parse_labels(path, &npy_bytes(descr, &[4], &bytes)).unwrap();
        assert_eq!(got, values, "{descr}");
        let got = npy::parse_labels(path, &npy_bytes(descr, &[4, 1], &bytes)).unwrap();
        assert_eq!(got, values, "{descr} (N, 1)");
    }
    let unsigned: [u64; 3] = [0, 9, 255];
    for (descr, size) in [("|u1", 1), ("<u2", 2), ("<u4", 4), ("<u8", 8)] {
        let bytes: Vec<u8> = unsigned
            .iter()
            .flat_map(|v| v.to_le_bytes()[..size].to_vec())
            .collect();
        let got = npy::parse_labels(path, &npy_bytes(descr, &[3], &bytes)).unwrap();
        assert_eq!(got, [0, 9, 255], "{descr}");
    }
    let refused = |descr: &str, shape: &[usize], bytes: &[u8]| {
        npy::parse_labels(path, &npy_bytes(descr, shape, bytes))
            .unwrap_err()
            .to_string()
    };
    let e = refused("<f4", &[2], &[0; 8]);
    assert!(
        e.contains("y.npy") && e.contains("'<f4'") && e.contains("astype(np.int64)"),
        "{e}"
    );
    let e = refused(">i4", &[2], &[0; 8]);
    assert!(e.contains("'>i4'"), "{e}");
    let e = refused("<i8", &[2, 2], &[0; 32]);
    assert!(e.contains("[2, 2]") && e.contains("(N,) or (N, 1)"), "{e}");
    let e = refused("<u8", &[1], &u64::MAX.to_le_bytes());
    assert!(e.contains("out of range"), "{e}");
    let e = refused("<i4", &[3], &[0; 8]);
    assert!(e.contains("data bytes"), "{e}");
    // The fixture (int64) and a file of pixels given as labels.
    let labels = npy::read_labels(fixture("mnist_test_labels.npy")).unwrap();
    assert_eq!(
        labels,
        npy::read_i64(fixture("mnist_test_labels.npy")).unwrap().1
    );
    let e = npy::read_labels(fixture("mnist_test_u8.npy"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[10000, 1, 28, 28]"), "{e}");
    // float64 images: the message says how to convert them.
    let e = npy::parse_any(Path::new("x.npy"), &npy_bytes("<f8", &[1], &[0; 8]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'<f8'") && e.contains("astype(np.float32)"),
        "{e}"
    );
}

/// `eval` scores int32 and uint8 labels as it scores the int64 fixture.
#[test]
fn eval_reads_int32_and_uint8_labels() {
    let dir = temp_dir("labels");
    let n = 64;
    let labels = npy::read_labels(fixture("mnist_test_labels.npy")).unwrap();
    let mut top1 = Vec::new();
    for (descr, size) in [("<i8", 8), ("<i4", 4), ("|u1", 1)] {
        let bytes: Vec<u8> = labels[..n]
            .iter()
            .flat_map(|v| v.to_le_bytes()[..size].to_vec())
            .collect();
        let path = dir.join(format!("y{size}.npy"));
        std::fs::write(&path, npy_bytes(descr, &[n], &bytes)).unwrap();
        let (ok, stdout, stderr) = subprune(&eval_args(
            &fixture("mnist_cnn.onnx"),
            &fixture("mnist_test_u8.npy"),
            &path,
            &[
                "--mean", "0.1307", "--std", "0.3081", "--limit", "64", "--json",
            ],
        ));
        assert!(ok, "{descr}: {stderr}");
        top1.push(json(&stdout)["correct_top1"].as_u64().unwrap());
    }
    assert!(top1[0] >= 60, "{top1:?}");
    assert!(top1.iter().all(|&t| t == top1[0]), "{top1:?}");
}

/// u8 images whose pixel count or `--mean/--std` lengths do not match the shape are refused with
/// a message that names the count.
#[test]
fn u8_images_of_mismatched_sizes_are_refused() {
    let err = |shape: Vec<usize>, len: usize, mean: &[f32]| {
        U8Images::new(shape, vec![0; len], mean, &[0.5])
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = err(vec![2, 1, 4, 4], 31, &[0.5]);
    assert!(e.contains("[2, 1, 4, 4]") && e.contains("31 pixels"), "{e}");
    let e = err(vec![2, 1, 4, 4], 32, &[0.5, 0.5]);
    assert!(
        e.contains("--mean has 2 values; the images have 1 channel (give 1 value)"),
        "{e}"
    );
    let e = err(vec![2, 3, 4, 4], 96, &[0.5, 0.5]);
    assert!(
        e.contains("the images have 3 channels (give 1 or 3)"),
        "{e}"
    );
    assert!(U8Images::new(vec![2, 3, 4, 4], vec![0; 96], &[0.5; 3], &[0.5]).is_ok());
}

/// u8 normalisation is the fixture README's formula, in f32 and in its order (every pixel value,
/// per-channel mean and std), bit for bit.
#[test]
fn u8_normalisation_follows_the_fixture_formula() {
    let pixels: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let src = U8Images::new(
        vec![1, 2, 16, 16],
        pixels.clone(),
        &[0.485, 0.456],
        &[0.229, 0.224],
    )
    .unwrap();
    let mut out = vec![0.0f32; 512];
    subprune::exec::run::ImageSource::fill(&src, 0, &mut out).unwrap();
    for (i, &p) in pixels.iter().enumerate() {
        let (m, s) = if i < 256 {
            (0.485f32, 0.229f32)
        } else {
            (0.456, 0.224)
        };
        let x = p as f32 / 255.0f32;
        let x = x - m;
        let want = x / s;
        assert_eq!(out[i].to_bits(), want.to_bits(), "pixel {i}");
    }
}

#[test]
fn info_reports_ops_parameters_flops_and_groups() {
    let (ok, stdout, stderr) = subprune(&[
        "info",
        fixture("mnist_cnn.onnx").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["parameters"], 421_642); // the fixture README's count
    assert_eq!(v["nodes"], 10);
    assert_eq!(v["op_counts"]["Relu"], 3);
    assert_eq!(v["inputs"][0]["shape"], "[N, 1, 28, 28]");
    // MACs by hand: conv1 32·1·9·28·28, conv2 64·32·9·14·14, fc1 3136·128, fc2 128·10.
    let macs: u64 = 32 * 9 * 28 * 28 + 64 * 32 * 9 * 14 * 14 + 3136 * 128 + 128 * 10;
    assert_eq!(v["flops_per_image"], 2 * macs);
    let groups = v["groups"].as_array().unwrap();
    let group = |p: &str| {
        groups
            .iter()
            .find(|x| x["name"] == p)
            .unwrap_or_else(|| panic!("no group {p}: {stdout}"))
    };
    assert_eq!(group("conv1")["consumers"][0][0], "conv2");
    assert_eq!(group("conv1")["consumers"][0][1], 9);
    assert_eq!(group("conv2")["consumers"][0][0], "fc1");
    assert_eq!(group("conv2")["channels"], 64);
    assert_eq!(group("conv2")["consumers"][0][1], 49);
    assert_eq!(group("fc1")["consumers"][0][1], 1);
    // ResNet-56: 27 block-internal groups and one stream; the text lists one line per group.
    let (ok, stdout, _) = subprune(&[
        "info",
        fixture("resnet56_cifar10.onnx").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok);
    let v = json(&stdout);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 28);
    let stream = groups.iter().find(|g| g["stream"] == true).unwrap();
    assert_eq!(stream["name"], "conv1");
    assert_eq!(stream["maps"]["Pad"], 2);
    assert!(v["prunable_conv_share"].as_f64().unwrap() > 0.9);
    let (ok, text, _) = subprune(&["info", fixture("resnet56_cifar10.onnx").to_str().unwrap()]);
    assert!(ok);
    assert!(text.lines().count() < 50, "{text}");
    assert!(text.contains("conv1: 64 channels (stream)"), "{text}");
}

#[test]
fn groups_are_named_by_their_first_producer_and_the_scope_is_checked() {
    let model = fixture("resnet56_cifar10.onnx");
    let calib = fixture("cifar10_calib_512.npy");
    let out = std::env::temp_dir().join(format!("subprune-groups-{}.onnx", std::process::id()));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "prune",
            model.to_str().unwrap(),
            "--calib",
            calib.to_str().unwrap(),
            "--calib-images",
            "4",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        subprune(&args)
    };
    // A later producer of the stream names the group it is in.
    let (ok, _, err) = run(&["--keep", "layer2.3.conv2=8"]);
    assert!(!ok);
    assert!(
        err.contains("layer2.3.conv2") && err.contains("group 'conv1'"),
        "{err}"
    );
    let (ok, _, err) = run(&["--groups", "some"]);
    assert!(!ok);
    assert!(
        err.contains("groups 'some'") && err.contains("internal"),
        "{err}"
    );
    // With --groups internal the stream is left whole and cannot be kept by name.
    let (ok, _, err) = run(&["--groups", "internal", "--keep", "conv1=8"]);
    assert!(!ok);
    assert!(err.contains("stream") && err.contains("internal"), "{err}");
    assert!(!out.exists(), "nothing written");
}

// ---- bad input ----

fn mnist_proto() -> proto::ModelProto {
    proto::ModelProto::decode(std::fs::read(fixture("mnist_cnn.onnx")).unwrap().as_slice()).unwrap()
}

#[test]
fn truncated_and_non_onnx_files_are_refused() {
    let bytes = std::fs::read(fixture("mnist_cnn.onnx")).unwrap();
    let err = onnx::load_bytes(Path::new("cut.onnx"), &bytes[..bytes.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.onnx") && err.contains("truncated"),
        "{err}"
    );
    // Corrupt: the first bytes overwritten.
    let mut corrupt = bytes.clone();
    corrupt[..16].fill(0xff);
    let err = onnx::load_bytes(Path::new("bad.onnx"), &corrupt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.onnx") && err.contains("corrupt"), "{err}");
    // Not ONNX: a .npy file, and text.
    let npy_bytes = std::fs::read(fixture("mnist_test_labels.npy")).unwrap();
    for (name, bytes) in [
        ("labels.npy", npy_bytes.as_slice()),
        ("t.txt", b"hello, world\n"),
    ] {
        let err = onnx::load_bytes(Path::new(name), bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(name) && err.contains("not an ONNX model"),
            "{err}"
        );
    }
    let (ok, _, stderr) = subprune(&["info", fixture("mnist_test_labels.npy").to_str().unwrap()]);
    assert!(!ok && stderr.contains("not an ONNX model"), "{stderr}");
}

#[test]
fn unsupported_op_is_named_with_its_node() {
    let mut m = mnist_proto();
    let g = m.graph.as_mut().unwrap();
    let relu = g
        .node
        .iter_mut()
        .find(|n| n.name.as_deref() == Some("relu2"))
        .unwrap();
    relu.op_type = Some("Elu".into());
    let err = onnx::load_bytes(Path::new("m.onnx"), &m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("relu2") && err.contains("Elu") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn every_unsupported_op_is_listed_in_one_message_with_counts() {
    let mut m = mnist_proto();
    let g = m.graph.as_mut().unwrap();
    for n in g.node.iter_mut() {
        match n.name.as_deref() {
            Some("relu1") | Some("relu2") => n.op_type = Some("Elu".into()),
            Some("pool2") => n.op_type = Some("Selu".into()),
            _ => {}
        }
    }
    let err = onnx::load_bytes(Path::new("m.onnx"), &m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 op types not supported")
            && err.contains("Elu ×2 (first: 'relu1')")
            && err.contains("Selu ×1 (first: 'pool2')")
            && err.contains("supported ops: Conv"),
        "{err}"
    );
}

#[test]
fn a_cycle_and_an_undefined_input_are_named() {
    let mut m = mnist_proto();
    let g = m.graph.as_mut().unwrap();
    g.node[0].input[0] = "nowhere".into();
    let err = onnx::load_bytes(Path::new("m.onnx"), &m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv1") && err.contains("nowhere"), "{err}");
}

#[test]
fn images_of_the_wrong_shape_are_refused() {
    let model = onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let exec = CpuExecutor::new(&model.graph).unwrap();
    // 3 channels of 28×28 for a 1-channel model, then 1 channel of 32×32.
    for shape in [vec![2, 3, 28, 28], vec![2, 1, 32, 32]] {
        let n: usize = shape.iter().product();
        let images =
            F32Images::new("x.npy", Tensor::new(shape.clone(), vec![0.0; n]).unwrap()).unwrap();
        let err = evaluate(&exec, &images, &[0, 0], 2, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("input") && err.contains("[N, 1, 28, 28]"),
            "{err}"
        );
    }
    // Through the CLI: CIFAR images into the MNIST model.
    let (ok, _, stderr) = subprune(&eval_args(
        &fixture("mnist_cnn.onnx"),
        &fixture("cifar10_test_u8.npy"),
        &fixture("cifar10_test_labels.npy"),
        &["--backend", "cpu"],
    ));
    assert!(!ok && stderr.contains("[N, 1, 28, 28]"), "{stderr}");
}

#[test]
fn labels_of_another_length_and_nan_data_are_refused() {
    let model = onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let exec = CpuExecutor::new(&model.graph).unwrap();
    let mut data = vec![0.0f32; 3 * 784];
    let images = F32Images::new(
        "x.npy",
        Tensor::new(vec![3, 1, 28, 28], data.clone()).unwrap(),
    )
    .unwrap();
    let err = evaluate(&exec, &images, &[1, 2], 2, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 labels for 3 images"), "{err}");
    data[784 * 2 + 5] = f32::NAN;
    let images = F32Images::new("x.npy", Tensor::new(vec![3, 1, 28, 28], data).unwrap()).unwrap();
    let err = evaluate(&exec, &images, &[1, 2, 3], 2, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.npy") && err.contains("NaN") && err.contains("1573"),
        "{err}"
    );
    // Through the CLI, with files.
    let dir = temp_dir("nan");
    let data_path = dir.join("nan.npy");
    let mut t = npy::read_f32(fixture("mnist_calib_512.npy")).unwrap();
    t.data[100] = f32::NAN;
    npy::write_f32(&data_path, &t).unwrap();
    let run = |labels: &Path| {
        subprune(&eval_args(
            &fixture("mnist_cnn.onnx"),
            &data_path,
            labels,
            &["--backend", "cpu"],
        ))
    };
    let (ok, _, stderr) = run(&fixture("mnist_test_labels.npy"));
    assert!(
        !ok && stderr.contains("10000 labels for 512 images"),
        "{stderr}"
    );
    let labels_path = dir.join("labels.npy");
    std::fs::write(&labels_path, i64_npy(&[0; 512])).unwrap();
    let (ok, _, stderr) = run(&labels_path);
    assert!(
        !ok && stderr.contains("nan.npy") && stderr.contains("index 100"),
        "{stderr}"
    );
}

#[test]
fn missing_external_data_is_named() {
    let dir = temp_dir("missing-ext");
    let model = onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let out = dir.join("m.onnx");
    let options = SaveOptions {
        external_data: ExternalData::File {
            location: "m.weights".into(),
            threshold: 0,
        },
    };
    onnx::save(&model, &out, &options).unwrap();
    std::fs::remove_file(dir.join("m.weights")).unwrap();
    let err = onnx::load(&out).unwrap_err().to_string();
    assert!(
        err.contains("m.weights") && err.contains("external data"),
        "{err}"
    );
    // A location that escapes the model's folder is refused too.
    let mut m = proto::ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key.as_deref() == Some("location") {
                e.value = Some("../../etc/passwd".into());
            }
        }
    }
    let err = onnx::load_bytes(&out, &m.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.contains("inside the model's folder"), "{err}");
}

#[test]
fn output_equal_to_the_input_is_refused_and_nothing_is_written() {
    let dir = temp_dir("same");
    let copy = dir.join("m.onnx");
    std::fs::copy(fixture("mnist_cnn.onnx"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let model = onnx::load(&copy).unwrap();
    // The same file, also through another spelling of its path.
    for target in [copy.clone(), dir.join(".").join("m.onnx")] {
        let err = onnx::save(&model, &target, &SaveOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing"), "{err}");
    }
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    let listing: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(listing.len(), 1, "no temporary file left behind");
}

#[test]
fn npy_reads_u8_and_i64() {
    match npy::read_any(fixture("cifar10_test_u8.npy")).unwrap() {
        NpyArray::U8 { shape, data } => {
            assert_eq!(shape, vec![846, 3, 32, 32]);
            assert_eq!(data.len(), 846 * 3 * 32 * 32);
        }
        other => panic!("{}", other.dtype()),
    }
    let (shape, labels) = npy::read_i64(fixture("cifar10_test_labels.npy")).unwrap();
    assert_eq!(shape, vec![846]);
    // The README's label counts.
    let mut counts = [0usize; 10];
    for &l in &labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [83, 70, 88, 84, 76, 79, 97, 87, 88, 94]);
    let err = npy::read_i64(fixture("cifar10_test_u8.npy"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("int64"), "{err}");
}
