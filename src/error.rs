//! Typed errors of the library. The binary turns them into messages; the library never prints.

use std::path::PathBuf;

/// Everything that can go wrong in subprune, with enough context to name the culprit
/// (file, tensor, shape, device).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A `.npy` file is malformed or holds something other than little-endian f32.
    #[error("{path}: {reason}")]
    Npy {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image file that cannot be used (undecodable, too small, unlabelled), or a folder of
    /// images that cannot be read as a data set.
    #[error("{path}: {reason}")]
    Image {
        /// The image, folder or labels file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// Shapes that do not fit together, named by tensor.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A NaN or infinity in input data.
    #[error("{tensor}: non-finite value {value} at flat index {index}")]
    NonFinite {
        /// Which tensor holds it.
        tensor: String,
        /// Flat (row-major) index of the first bad value.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// A finite input value beyond what f16 holds, met while the GPU statistics take f16 inputs.
    #[error(
        "{tensor}: value {value} at flat index {index} is outside the f16 range (±65504); turn \
         f16 inputs off for this layer"
    )]
    OutsideF16 {
        /// Which tensor holds it.
        tensor: String,
        /// Flat (row-major) index of the first such value.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// An argument outside its valid range (budget, tolerance, geometry).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The GPU backend failed: no adapter, a lost device, a refused allocation, a shader error.
    #[error("GPU backend: {0}")]
    Gpu(String),
    /// A model file that cannot be read or written as ONNX (not protobuf, truncated, a missing
    /// external data file, an output path that would overwrite an input).
    #[error("{path}: {reason}")]
    Onnx {
        /// The model (or external data) file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A graph node that cannot be imported, shaped or run, named with its op.
    #[error("node '{node}' ({op}): {reason}")]
    Node {
        /// The node's name (or `#index` when it has none).
        node: String,
        /// Its op type.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// Finite inputs whose statistics (Gram sums, `C0`, `‖AW‖²`) are not finite: the values are
    /// too large for the precision the sums are accumulated in.
    #[error("{tensor} is not finite ({detail}); {hint}")]
    NonFiniteStatistics {
        /// Which statistic (e.g. `BᵀB of inputs`).
        tensor: String,
        /// Where, and the largest input magnitude.
        detail: String,
        /// What to do about it.
        hint: String,
    },
    /// The work needs more memory than is available (or than the caller allowed).
    #[error(
        "{what} needs about {needed} but only {available} is available{source_note}",
        needed = crate::units::human_bytes(*needed),
        available = crate::units::human_bytes(*available)
    )]
    Memory {
        /// What needs the memory.
        what: String,
        /// Bytes needed (an estimate).
        needed: u64,
        /// Bytes available (free memory, or the caller's limit).
        available: u64,
        /// Where the limit comes from and what to do.
        source_note: String,
    },
    /// An error met while working on one part of the model or of the pipeline, with that part
    /// named (`node 'conv2' (Conv)`, `layer 'layer1.0.conv1'`, …), as tract's `with_context`. Use
    /// [`Error::root`] to match on the error itself.
    #[error("{context}: {source}")]
    Context {
        /// The part worked on, e.g. `layer 'conv1'`.
        context: String,
        /// The error met there.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The error with `context` (the part of the work it happened in) in front.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The error under every [`Error::Context`]: what a caller matches on.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// The same error with the flat index of a value-level error ([`Error::NonFinite`],
    /// [`Error::OutsideF16`]) moved on by `offset`: from a batch's first value to the tensor the
    /// batch was cut from. Other errors are returned as they are.
    pub fn with_index_offset(self, offset: usize) -> Error {
        match self {
            Error::NonFinite {
                tensor,
                index,
                value,
            } => Error::NonFinite {
                tensor,
                index: index + offset,
                value,
            },
            Error::OutsideF16 {
                tensor,
                index,
                value,
            } => Error::OutsideF16 {
                tensor,
                index: index + offset,
                value,
            },
            Error::Context { context, source } => Error::Context {
                context,
                source: Box::new(source.with_index_offset(offset)),
            },
            e => e,
        }
    }
}

/// [`Error::context`] on results: `graph.run(x).context(|| format!("layer '{name}'"))?`.
pub trait Context<T> {
    /// The error, if any, with the context `context()` computes (only on failure).
    fn context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_the_part_in_front_and_root_sees_through_it() {
        let e = Error::Gpu("device lost".into())
            .context("node 'conv1' (Conv)")
            .context("layer 'conv1'");
        assert_eq!(
            e.to_string(),
            "layer 'conv1': node 'conv1' (Conv): GPU backend: device lost"
        );
        assert!(matches!(e.root(), Error::Gpu(m) if m == "device lost"));
        let r: Result<()> = Err(Error::Shape("x".into()));
        let e = r.context(|| "reading 'a.npy'").unwrap_err();
        assert_eq!(e.to_string(), "reading 'a.npy': shape mismatch: x");
        // Value-level errors keep their index offsets under a context.
        let e = Error::NonFinite {
            tensor: "inputs".into(),
            index: 3,
            value: f32::NAN,
        }
        .context("layer 'fc1'")
        .with_index_offset(10);
        assert!(
            matches!(e.root(), Error::NonFinite { index: 13, .. }),
            "{e}"
        );
    }
}
