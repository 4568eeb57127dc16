//! Folders of PNG/JPEG images as data (`subprune::images`, `--calib DIR`, `--data DIR`): the
//! MNIST calibration set written as PNGs prunes exactly as its `.npy`; resize and crop against
//! hand-computed values; grey ↔ RGB; labels from subfolders and from files; errors naming the
//! file.

mod common;

use std::path::Path;

use common::*;
use subprune::images::{read_folder, ImageFolder, ImageOptions, Labels};

const MNIST_MEAN: f32 = 0.1307;
const MNIST_STD: f32 = 0.3081;

/// Writes 8-bit pixels (grey, or interleaved RGB with `rgb`) as a PNG, making its folder.
fn png(path: &Path, w: u32, h: u32, pixels: &[u8], rgb: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let colour = if rgb {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    image::save_buffer(path, pixels, w, h, colour).unwrap();
}

fn grey_png(path: &Path, w: u32, h: u32, pixels: &[u8]) {
    png(path, w, h, pixels, false)
}

fn grey_options(size: [usize; 2], resize: Option<usize>) -> ImageOptions {
    ImageOptions {
        channels: 1,
        size,
        resize,
        mean: vec![0.0],
        std: vec![1.0],
    }
}

/// The fixture's preprocessing undone: the 8-bit pixels of a normalised MNIST image.
fn mnist_pixels(normalised: &[f32]) -> Vec<u8> {
    normalised
        .iter()
        .map(|&x| ((x as f64 * MNIST_STD as f64 + MNIST_MEAN as f64) * 255.0).round() as u8)
        .collect()
}

#[test]
fn png_folder_of_the_calibration_set_prunes_as_the_npy() {
    const N: usize = 128;
    let dir = temp_dir("png-calib");
    let calib = first_images("mnist_calib_512.npy", N);
    let per = 28 * 28;
    let folder = dir.join("calib");
    for i in 0..N {
        let pixels = mnist_pixels(&calib.data[i * per..(i + 1) * per]);
        grey_png(&folder.join(format!("img_{i:03}.png")), 28, 28, &pixels);
    }
    // PNG → f32 reproduces the fixture bit for bit (its preprocessing: f32(p)/255, − mean, / std).
    let options = ImageOptions {
        mean: vec![MNIST_MEAN],
        std: vec![MNIST_STD],
        ..grey_options([28, 28], None)
    };
    let set = read_folder(&folder, &options).unwrap();
    assert_eq!(set.images.shape, vec![N, 1, 28, 28]);
    assert_eq!(set.labels, None, "a flat folder has no classes");
    let same = set
        .images
        .data
        .iter()
        .zip(&calib.data)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "the PNGs decode to other values than the .npy");

    let npy = write_npy(&dir, "calib.npy", &calib);
    let quarter = ["--keep-fraction", "0.25"];
    let from_npy = prune_report(&dir, "npy", &npy, &quarter);
    let norm = [
        "--keep-fraction",
        "0.25",
        "--mean",
        "0.1307",
        "--std",
        "0.3081",
    ];
    let from_pngs = prune_report(&dir, "png", folder.to_str().unwrap(), &norm);
    let layers = |r: &serde_json::Value| r["layers"].as_array().unwrap().clone();
    assert_eq!(layers(&from_npy).len(), 3, "conv1, conv2, fc1");
    for (a, b) in layers(&from_npy).iter().zip(&layers(&from_pngs)) {
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["kept"], b["kept"], "kept channels of {}", a["name"]);
        assert_eq!(a["relative_error"], b["relative_error"]);
    }
    assert_eq!(from_npy["images"], from_pngs["images"]);
}

#[test]
fn calib_images_from_a_folder_are_a_seeded_draw_in_folder_order() {
    let dir = temp_dir("pick");
    for i in 0..20u8 {
        grey_png(&dir.join(format!("{i:02}.png")), 1, 1, &[i]);
    }
    let picked = |seed| {
        let mut f = ImageFolder::scan(&dir, &Labels::Subfolders).unwrap();
        f.pick(5, seed);
        f.paths
    };
    let a = picked(3);
    assert_eq!(a.len(), 5);
    assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted: {a:?}");
    assert_eq!(a, picked(3), "same seed, same draw");
    assert_ne!(a, picked(4), "another seed, another draw");
}

#[test]
fn resize_then_centre_crop_matches_hand_computed_values() {
    // 4 × 2 (width × height): shorter side 2 → 1 gives 2 × 1. Vertically the two rows weigh the
    // same; horizontally the triangle filter widened to 2 pixels weighs pixels 0,1,2 as 3,3,1
    // (÷7) for the first output and 1,2,3 as 1,3,3 for the second (PIL's antialiased BILINEAR).
    let dir = temp_dir("resize");
    let row0 = [0u8, 70, 140, 210];
    let row1 = [14u8, 84, 154, 224];
    grey_png(&dir.join("a.png"), 4, 2, &[row0, row1].concat());
    // Column means 7, 77, 147, 217 → (3·7 + 3·77 + 147)/7 = 57 and (77 + 3·147 + 3·217)/7 = 167.
    let set = read_folder(&dir, &grey_options([1, 2], Some(1))).unwrap();
    assert_eq!(set.images.shape, vec![1, 1, 1, 2]);
    for (got, want) in set.images.data.iter().zip([57.0f32, 167.0]) {
        assert!((got * 255.0 - want).abs() < 1e-3, "{got} vs {want}/255");
    }
    // Crop 1 × 1 of the 2 × 1: left offset round(1/2) = 0 (halves to even, as torchvision).
    let set = read_folder(&dir, &grey_options([1, 1], Some(1))).unwrap();
    assert!((set.images.data[0] * 255.0 - 57.0).abs() < 1e-3);
    // No resize: the centre 2 × 2 of the 4 × 2 is columns 1..3.
    let set = read_folder(&dir, &grey_options([2, 2], None)).unwrap();
    let want = [70.0f32, 140.0, 84.0, 154.0];
    assert_eq!(set.images.data, want.map(|p| p / 255.0).to_vec());
    // Centre 1 × 1 of 3 × 3 is the middle pixel; of 5 × 5 cropped to 2 × 2 the offset is
    // round(1.5) = 2.
    let odd = temp_dir("crop-odd");
    grey_png(&odd.join("b.png"), 5, 5, &(0..25).collect::<Vec<u8>>());
    let set = read_folder(&odd, &grey_options([2, 2], None)).unwrap();
    assert_eq!(
        set.images.data,
        [12.0f32, 13.0, 17.0, 18.0].map(|p| p / 255.0).to_vec()
    );
}

#[test]
fn grey_and_rgb_images_fill_the_models_channels() {
    let dir = temp_dir("channels");
    png(&dir.join("colour.png"), 1, 1, &[200, 100, 50], true);
    grey_png(&dir.join("grey.png"), 1, 1, &[90]);
    // One channel: PIL's L of (200, 100, 50) = (19595·200 + 38470·100 + 7471·50 + 2¹⁵) >> 16
    // = 8172318 >> 16 = 124 (0.299·200 + 0.587·100 + 0.114·50 = 124.2).
    let luma = ((19595 * 200 + 38470 * 100 + 7471 * 50 + 32768) >> 16) as f32;
    assert_eq!(luma, 124.0);
    let set = read_folder(&dir, &grey_options([1, 1], None)).unwrap();
    assert_eq!(set.images.data, vec![luma / 255.0, 90.0 / 255.0]);
    // Three channels, normalised per channel: the grey image is repeated.
    let options = ImageOptions {
        channels: 3,
        size: [1, 1],
        resize: None,
        mean: vec![0.5, 0.25, 0.0],
        std: vec![2.0, 1.0, 0.5],
    };
    let set = read_folder(&dir, &options).unwrap();
    let norm = |p: f32, c: usize| (p / 255.0 - options.mean[c]) / options.std[c];
    let want = vec![
        norm(200.0, 0),
        norm(100.0, 1),
        norm(50.0, 2),
        norm(90.0, 0),
        norm(90.0, 1),
        norm(90.0, 2),
    ];
    assert_eq!(set.images.data, want);
    let two = ImageOptions {
        channels: 2,
        ..options
    };
    let err = read_folder(&dir, &two).unwrap_err().to_string();
    assert!(err.contains("takes 2 channels"), "{err}");
}

/// The first `n` MNIST test images and labels, written as PNGs: one subfolder per class, or
/// flat (`flat/IIII.png`) with a labels text file.
fn mnist_test_folders(dir: &Path, n: usize) -> Vec<i64> {
    let raw = subprune::npy::read_any(fixture("mnist_test_u8.npy")).unwrap();
    let subprune::npy::NpyArray::U8 { data, .. } = raw else {
        panic!("uint8 test set expected")
    };
    let labels = subprune::npy::read_labels(fixture("mnist_test_labels.npy")).unwrap();
    let mut text = String::new();
    for i in 0..n {
        let pixels = &data[i * 784..(i + 1) * 784];
        let name = format!("{i:04}.png");
        grey_png(
            &dir.join(format!("classes/{}/{name}", labels[i])),
            28,
            28,
            pixels,
        );
        grey_png(&dir.join("flat").join(&name), 28, 28, pixels);
        text.push_str(&format!("{name} {}\n", labels[i]));
    }
    std::fs::write(dir.join("labels.txt"), text).unwrap();
    labels[..n].to_vec()
}

#[test]
fn eval_on_class_folders_and_labels_files_counts_as_on_the_npy() {
    const N: usize = 200;
    let dir = temp_dir("eval-folders");
    let labels = mnist_test_folders(&dir, N);
    // Subfolder classes, sorted: "0".."9" is class 0..9 when every digit occurs.
    let folder = ImageFolder::scan(&dir.join("classes"), &Labels::Subfolders).unwrap();
    assert_eq!(
        folder.classes,
        (0..10).map(|d| d.to_string()).collect::<Vec<_>>()
    );
    let mut by_folder: Vec<i64> = folder.labels.unwrap().iter().map(|&l| l as i64).collect();
    let mut want = labels.clone();
    by_folder.sort_unstable();
    want.sort_unstable();
    assert_eq!(by_folder, want);

    let model = fixture("mnist_cnn.onnx");
    let eval = |data: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--mean", "0.1307", "--std", "0.3081", "--json"]);
        let out = subprune(&args);
        assert!(out.status.success(), "eval {data:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["correct_top1"].as_u64().unwrap(),
            v["images"].as_u64().unwrap(),
        )
    };
    let npy = fixture("mnist_test_u8.npy");
    let npy_labels = fixture("mnist_test_labels.npy");
    let reference = eval(
        &npy,
        &["--labels", npy_labels.to_str().unwrap(), "--limit", "200"],
    );
    assert_eq!(reference.1, N as u64);
    assert_eq!(eval(&dir.join("classes"), &[]), reference);
    let text = dir.join("labels.txt");
    assert_eq!(
        eval(&dir.join("flat"), &["--labels", text.to_str().unwrap()]),
        reference
    );
    // The same labels as .npy, one per image in the flat folder's sorted order.
    let labels_npy = dir.join("labels.npy");
    std::fs::write(&labels_npy, i64_npy(&labels)).unwrap();
    assert_eq!(
        eval(
            &dir.join("flat"),
            &["--labels", labels_npy.to_str().unwrap()]
        ),
        reference
    );
}

#[test]
fn bad_folders_and_images_are_refused_naming_the_file() {
    let dir = temp_dir("bad-images");
    let model = fixture("mnist_cnn.onnx");
    let model = model.to_str().unwrap();
    let out = dir.join("out.onnx");
    let prune = |calib: &Path, extra: &[&str]| {
        let mut args = vec!["prune", model, "--calib", calib.to_str().unwrap()];
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        subprune(&args)
    };
    // A corrupt PNG.
    let corrupt = dir.join("corrupt");
    grey_png(&corrupt.join("a.png"), 28, 28, &[7; 784]);
    std::fs::write(corrupt.join("b.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let r = prune(&corrupt, &[]);
    assert_failure(&r, Some(1), "a corrupt PNG", &["b.png", "cannot decode"]);
    // Smaller than the model's input, without and with --resize.
    let small = dir.join("small");
    grey_png(&small.join("tiny.png"), 14, 20, &[100; 280]);
    let r = prune(&small, &[]);
    assert_failure(
        &r,
        Some(1),
        "a small image",
        &["tiny.png", "14×20", "--resize"],
    );
    let r = prune(&small, &["--resize", "28", "--keep-fraction", "0.5"]);
    assert!(r.status.success(), "resized to 28×40: {}", stderr(&r));
    // No images; a model whose input size --crop contradicts.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "no images here").unwrap();
    assert_failure(
        &prune(&empty, &[]),
        Some(1),
        "no images",
        &["empty", "no images found"],
    );
    let r = prune(&small, &["--crop", "20,20"]);
    assert_failure(
        &r,
        Some(1),
        "--crop against 28×28",
        &["--crop 20,20", "28×28"],
    );
    let r = prune(&small, &["--calib-images", "5"]);
    assert_failure(
        &r,
        Some(1),
        "too many picked",
        &["--calib-images 5", "holds only 1"],
    );
    // Labels: a flat folder has none; a labels file that misses an image.
    let labelled = temp_dir("bad-labels");
    mnist_test_folders(&labelled, 3);
    let flat = labelled.join("flat");
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", model, "--data", flat.to_str().unwrap()];
        args.extend_from_slice(extra);
        subprune(&args)
    };
    assert_failure(&eval(&[]), Some(1), "no labels", &["flat", "no labels"]);
    let partial = labelled.join("partial.txt");
    std::fs::write(&partial, "0000.png 7\n0001.png 2\n").unwrap();
    let r = eval(&["--labels", partial.to_str().unwrap()]);
    assert_failure(
        &r,
        Some(1),
        "a missing label",
        &["partial.txt", "no label for 0002.png"],
    );
    let err = ImageFolder::scan(&flat, &Labels::File(labelled.join("absent.txt")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.txt"), "{err}");
}
