//! Folders of JPEG/PNG images as data: found in a deterministic order, decoded, resized and
//! centre-cropped to a model's input, converted to its channel count and normalised, with class
//! labels from subfolder names or a labels file.
//!
//! The steps follow torchvision's usual evaluation transform (`Resize(S)` → `CenterCrop` →
//! `ToTensor` → `Normalize`) on PIL images:
//! * **order**: every `.png`, `.jpg`, `.jpeg` file under the folder (any depth, names starting
//!   with `.` skipped), sorted by relative path component by component;
//! * **labels**: with images only inside the folder's subfolders, the class of an image is the
//!   index of its top-level subfolder among all of them sorted by name (torchvision's
//!   `ImageFolder`); or a labels file ([`Labels`]);
//! * **channels**: a grey image is repeated into R, G, B for a 3-channel model; a colour one is
//!   turned grey for a 1-channel model with PIL's `L` conversion (on 8-bit images
//!   `(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`, on 16-bit ones `0.299 R + 0.587 G + 0.114 B`);
//!   alpha is dropped;
//! * **resize** (only with [`ImageOptions::resize`]): the shorter side to `S`, the longer to
//!   `⌊S · long / short⌋`, bilinear with antialiasing (a triangle filter widened by the scale
//!   on downscaling, as PIL's `BILINEAR`), in f32 on values in [0, 1]; an image already of that
//!   size is left as it is;
//! * **crop**: the centre `H × W` (offsets `round((h − H) / 2)`, halves to even, as
//!   torchvision's `CenterCrop`); an image smaller than `H × W` is refused;
//! * **values**: `(f32(pixel) / 255 − mean[c]) / std[c]` in f32, in that order (`/ 65535` for
//!   16-bit images), so 8-bit images that need no resize reproduce the arrays of the fixtures
//!   bit for bit.
//!
//! An image that cannot be read or decoded is an error naming the file: a data set with a
//! broken file is better repaired than silently shrunk. The decoded images are held in memory
//! (`N × C × H × W` f32 values).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How the images of a folder become a model's input.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageOptions {
    /// Channels of the model's input (1 or 3).
    pub channels: usize,
    /// `[H, W]` of the model's input: each image is centre-cropped to it.
    pub size: [usize; 2],
    /// Resize the shorter side to this before the crop; `None`: no resize.
    pub resize: Option<usize>,
    /// Per-channel mean: one value or `channels` values.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation: one value or `channels` values.
    pub std: Vec<f32>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            channels: 3,
            size: [224, 224],
            resize: None,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }
}

/// Where the labels of a folder's images come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Labels {
    /// From the top-level subfolders when every image is in one, else none.
    #[default]
    Subfolders,
    /// From a file: `.npy` (int64, one per image in the folder's order) or text, one
    /// `RELATIVE/PATH LABEL` per line (a space, tab or comma between), every image listed.
    File(PathBuf),
}

/// A folder's images, decoded.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// `(N, C, H, W)`, normalised.
    pub images: Tensor,
    /// One class index per image, when the folder or a labels file gives them.
    pub labels: Option<Vec<usize>>,
    /// The images' paths relative to the folder, in order.
    pub paths: Vec<PathBuf>,
    /// The class names (the subfolders, sorted) when labels come from subfolders.
    pub classes: Vec<String>,
}

/// A folder's image files in order, with their labels: what [`read_folder`] decodes.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    /// The folder.
    pub root: PathBuf,
    /// The image files relative to `root`, sorted.
    pub paths: Vec<PathBuf>,
    /// One class index per image, if known.
    pub labels: Option<Vec<usize>>,
    /// The class names when labels come from subfolders.
    pub classes: Vec<String>,
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn image_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Image files under `dir` (relative paths, unsorted); hidden entries skipped.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows links, as a user who links a data set into a folder expects.
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() && is_image(&path) {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

impl ImageFolder {
    /// The image files under `dir` in order, and their labels as `labels` says.
    pub fn scan(dir: &Path, labels: &Labels) -> Result<Self> {
        let meta = std::fs::metadata(dir).map_err(|e| io_error(dir, e))?;
        if !meta.is_dir() {
            return Err(image_error(dir, "not a folder"));
        }
        let mut paths = Vec::new();
        walk(dir, dir, &mut paths)?;
        paths.sort();
        if paths.is_empty() {
            return Err(image_error(
                dir,
                format!(
                    "no images found (looked for {} files, any depth)",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        let mut folder = Self {
            root: dir.to_path_buf(),
            paths,
            labels: None,
            classes: Vec::new(),
        };
        match labels {
            Labels::Subfolders => folder.label_by_subfolder()?,
            Labels::File(file) => folder.labels = Some(folder.read_labels_file(file)?),
        }
        Ok(folder)
    }

    /// Labels from top-level subfolders, when every image is in one.
    fn label_by_subfolder(&mut self) -> Result<()> {
        if self.paths.iter().any(|p| p.components().count() == 1) {
            // Top-level images: no classes; images in subfolders too are just more images.
            return Ok(());
        }
        let mut classes = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(|e| io_error(&self.root, e))? {
            let entry = entry.map_err(|e| io_error(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with('.') && entry.path().is_dir() {
                classes.push(name);
            }
        }
        classes.sort();
        let labels = self
            .paths
            .iter()
            .map(|p| {
                let top = p
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy());
                classes
                    .iter()
                    .position(|c| top.as_deref() == Some(c.as_str()))
                    .ok_or_else(|| image_error(&self.root.join(p), "in no class folder"))
            })
            .collect::<Result<Vec<_>>>()?;
        self.labels = Some(labels);
        self.classes = classes;
        Ok(())
    }

    fn read_labels_file(&self, file: &Path) -> Result<Vec<usize>> {
        let to_index = |v: i64, what: &dyn Fn() -> String| {
            usize::try_from(v)
                .map_err(|_| image_error(file, format!("label {v} of {} is negative", what())))
        };
        if file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
        {
            let raw = crate::npy::read_labels(file)?;
            if raw.len() != self.paths.len() {
                return Err(image_error(
                    file,
                    format!(
                        "{} labels for the {} images of {}",
                        raw.len(),
                        self.paths.len(),
                        self.root.display()
                    ),
                ));
            }
            return raw
                .iter()
                .zip(&self.paths)
                .map(|(&v, p)| to_index(v, &|| p.display().to_string()))
                .collect();
        }
        let text = std::fs::read_to_string(file).map_err(|e| io_error(file, e))?;
        let mut by_path = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || image_error(file, format!("line {}: expected PATH LABEL", n + 1));
            let (path, label) = line
                .rsplit_once(|c: char| c == ',' || c.is_whitespace())
                .ok_or_else(bad)?;
            let label: i64 = label.trim().parse().map_err(|_| bad())?;
            let index = to_index(label, &|| format!("line {}", n + 1))?;
            by_path.insert(PathBuf::from(path.trim()), index);
        }
        self.paths
            .iter()
            .map(|p| {
                by_path
                    .get(p)
                    .copied()
                    .ok_or_else(|| image_error(file, format!("no label for {}", p.display())))
            })
            .collect()
    }

    /// Keeps `n` images drawn with `seed` (all when `n` is at least their number), in the
    /// folder's order.
    pub fn pick(&mut self, n: usize, seed: u64) {
        let total = self.paths.len();
        if n >= total {
            return;
        }
        let mut rng = crate::rng::Rng::new(seed);
        let mut order: Vec<usize> = (0..total).collect();
        for i in 0..n {
            let j = i + (rng.next_u64() % (total - i) as u64) as usize;
            order.swap(i, j);
        }
        let mut chosen = order[..n].to_vec();
        chosen.sort_unstable();
        self.paths = chosen.iter().map(|&i| self.paths[i].clone()).collect();
        if let Some(labels) = &mut self.labels {
            *labels = chosen.iter().map(|&i| labels[i]).collect();
        }
    }

    /// Decodes every image (in parallel) into `(N, C, H, W)`.
    pub fn decode(&self, options: &ImageOptions) -> Result<ImageSet> {
        if !matches!(options.channels, 1 | 3) {
            return Err(Error::InvalidArgument(format!(
                "the model takes {} channels; images fill 1 (grey) or 3 (RGB)",
                options.channels
            )));
        }
        let norm = Normalization::new(&options.mean, &options.std, options.channels)?;
        let [h, w] = options.size;
        let per = options.channels * h * w;
        if per == 0 {
            return Err(Error::InvalidArgument(format!(
                "image size {}×{h}×{w} holds no values",
                options.channels
            )));
        }
        let mut data = vec![0.0f32; self.paths.len() * per];
        data.par_chunks_mut(per)
            .zip(self.paths.par_iter())
            .try_for_each(|(out, rel)| {
                let path = self.root.join(rel);
                let planes = load(&path, options)?;
                norm.apply(&planes, out);
                Ok::<_, Error>(())
            })?;
        Ok(ImageSet {
            images: Tensor::new(vec![self.paths.len(), options.channels, h, w], data)?,
            labels: self.labels.clone(),
            paths: self.paths.clone(),
            classes: self.classes.clone(),
        })
    }
}

/// The images under `dir`, decoded as `options` says, with labels from subfolders.
pub fn read_folder(dir: &Path, options: &ImageOptions) -> Result<ImageSet> {
    ImageFolder::scan(dir, &Labels::Subfolders)?.decode(options)
}

/// Per-channel `(x − mean[c]) / std[c]`, checked once.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// One mean per channel.
    pub mean: Vec<f32>,
    /// One standard deviation per channel (finite, non-zero).
    pub std: Vec<f32>,
}

impl Normalization {
    /// `mean` and `std` (one value or `channels` values each) for images of `channels` channels.
    pub fn new(mean: &[f32], std: &[f32], channels: usize) -> Result<Self> {
        let expand = |v: &[f32], what: &str| -> Result<Vec<f32>> {
            match v.len() {
                1 => Ok(vec![v[0]; channels]),
                l if l == channels => Ok(v.to_vec()),
                l => Err(Error::InvalidArgument(if channels == 1 {
                    format!("--{what} has {l} values; the images have 1 channel (give 1 value)")
                } else {
                    format!(
                        "--{what} has {l} values; the images have {channels} channels (give 1 \
                         or {channels})"
                    )
                })),
            }
        };
        let (mean, std) = (expand(mean, "mean")?, expand(std, "std")?);
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
            return Err(Error::InvalidArgument(format!(
                "std {s} must be finite and non-zero"
            )));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::InvalidArgument("mean must be finite".into()));
        }
        Ok(Self { mean, std })
    }

    /// Normalises `planes` (`C` planes of values in [0, 1]) into `out`.
    fn apply(&self, planes: &[f32], out: &mut [f32]) {
        let plane = planes.len() / self.mean.len();
        for (i, (o, &v)) in out.iter_mut().zip(planes).enumerate() {
            let c = i / plane;
            *o = (v - self.mean[c]) / self.std[c];
        }
    }
}

/// One image as `C` planes of `H × W` values in [0, 1]: decoded, converted, resized, cropped.
fn load(path: &Path, options: &ImageOptions) -> Result<Vec<f32>> {
    let image = image::ImageReader::open(path)
        .map_err(|e| io_error(path, e))?
        .with_guessed_format()
        .map_err(|e| io_error(path, e))?
        .decode()
        .map_err(|e| image_error(path, format!("cannot decode: {e}")))?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut planes =
        to_planes(&image, options.channels).map_err(|reason| image_error(path, reason))?;
    let (mut w, mut h) = (w, h);
    if let Some(s) = options.resize {
        let (nw, nh) = resized_size(w, h, s);
        if nw == 0 || nh == 0 {
            return Err(image_error(
                path,
                format!("{w}×{h} resized to shorter side {s} is empty"),
            ));
        }
        if (nw, nh) != (w, h) {
            planes = resize_planes(&planes, [w, h], [nw, nh]);
            (w, h) = (nw, nh);
        }
    }
    let [th, tw] = options.size;
    if h < th || w < tw {
        return Err(image_error(
            path,
            format!(
                "{w}×{h} (width × height) is smaller than the input {tw}×{th}{}",
                if options.resize.is_none() {
                    "; give a resize (--resize S) to scale it first"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(centre_crop(&planes, [w, h], [tw, th]))
}

/// `(width, height)` after resizing the shorter side to `s` (the longer truncated, as
/// torchvision's `Resize(s)`).
pub fn resized_size(w: usize, h: usize, s: usize) -> (usize, usize) {
    if w <= h {
        (s, s * h / w.max(1))
    } else {
        (s * w / h.max(1), s)
    }
}

/// The image's pixels as `channels` planes of values in [0, 1].
fn to_planes(
    image: &image::DynamicImage,
    channels: usize,
) -> std::result::Result<Vec<f32>, String> {
    use image::DynamicImage as D;
    let eight_bit = matches!(
        image,
        D::ImageLuma8(_) | D::ImageLumaA8(_) | D::ImageRgb8(_) | D::ImageRgba8(_)
    );
    let colour = image.color().has_color();
    let interleaved: Vec<f32> = match (channels, colour, eight_bit) {
        (1, false, true) => image.to_luma8().iter().map(|&p| p as f32 / 255.0).collect(),
        (1, false, false) => image.to_luma32f().into_raw(),
        (1, true, true) => image
            .to_rgb8()
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as f32 / 255.0
            })
            .collect(),
        (1, true, false) => image
            .to_rgb32f()
            .pixels()
            .map(|p| 0.299 * p.0[0] + 0.587 * p.0[1] + 0.114 * p.0[2])
            .collect(),
        (3, _, true) => image.to_rgb8().iter().map(|&p| p as f32 / 255.0).collect(),
        (3, _, false) => image.to_rgb32f().into_raw(),
        (c, _, _) => {
            return Err(format!(
                "the model takes {c} channels; images can fill 1 (grey) or 3 (RGB)"
            ))
        }
    };
    // Interleaved HWC → planar CHW.
    let pixels = interleaved.len() / channels;
    let mut planes = vec![0.0f32; interleaved.len()];
    for (i, &v) in interleaved.iter().enumerate() {
        planes[(i % channels) * pixels + i / channels] = v;
    }
    Ok(planes)
}

/// Each plane resized from `[w, h]` to `[nw, nh]` with the triangle (bilinear, antialiased)
/// filter.
fn resize_planes(planes: &[f32], [w, h]: [usize; 2], [nw, nh]: [usize; 2]) -> Vec<f32> {
    planes
        .chunks(w * h)
        .flat_map(|plane| {
            let buffer: image::ImageBuffer<image::Luma<f32>, Vec<f32>> =
                image::ImageBuffer::from_raw(w as u32, h as u32, plane.to_vec())
                    .expect("a plane holds w × h values");
            image::imageops::resize(
                &buffer,
                nw as u32,
                nh as u32,
                image::imageops::FilterType::Triangle,
            )
            .into_raw()
        })
        .collect()
}

/// `round(diff / 2)` with halves to even, as Python's `round` (torchvision's crop offsets).
fn half_even(diff: usize) -> usize {
    let (q, r) = (diff / 2, diff % 2);
    if r == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// The centre `[tw, th]` of each `[w, h]` plane.
fn centre_crop(planes: &[f32], [w, h]: [usize; 2], [tw, th]: [usize; 2]) -> Vec<f32> {
    if [w, h] == [tw, th] {
        return planes.to_vec();
    }
    let (top, left) = (half_even(h - th), half_even(w - tw));
    let mut out = Vec::with_capacity(planes.len() / (w * h) * tw * th);
    for plane in planes.chunks(w * h) {
        for row in top..top + th {
            out.extend_from_slice(&plane[row * w + left..row * w + left + tw]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_round_half_to_even() {
        // round(0.5) = 0, round(1) = 1, round(1.5) = 2, round(2.5) = 2.
        assert_eq!([0, 1, 2, 3, 4, 5].map(half_even), [0, 0, 1, 2, 2, 2]);
    }
}
