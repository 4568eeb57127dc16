//! # subprune
//!
//! Data-efficient structured pruning of convolutional networks by weakly submodular greedy channel
//! selection with optimal reweighting of the next layer (El Halabi, Srinivas, Lacoste-Julien,
//! NeurIPS 2022). See `docs/ALGORITHM.md` in the repository for the method.
//!
//! Data flows one way. One layer ([`layer`]): consumer inputs → Gram statistics on a
//! [`Backend`] (CPU or GPU, [`backend`]) → the greedy (selection order, error curve) → the
//! reweighting (new consumer weights). Whole ONNX networks: [`onnx`] → [`ir`] →
//! [`analysis`] (which channels can be pruned) → [`prune`] (forward passes on an
//! [`exec::Executor`], the layer engine per layer, IR edits) → [`onnx::save`]. The README's
//! "Layout" section draws the layers; `tests/layering.rs` checks that imports follow them.
//!
//! ```no_run
//! use subprune::{select, Budget, CpuBackend, LayerProblem, SelectOptions, npy};
//! let inputs = npy::read_f32("B.npy")?;   // (N, C, H, W): the consumer's input
//! let weight = npy::read_f32("W.npy")?;   // (M, C, kh, kw): the consumer's weight
//! let problem = LayerProblem::new(&inputs.shape, weight.view(), None)?;
//! let options = SelectOptions { budget: Budget::KeepFraction(0.5), ..Default::default() };
//! let sel = select(&CpuBackend::new(), &problem, inputs.view(), None, &options, &mut |_, _, _| {})?;
//! println!("kept {:?}, error {}", sel.kept, sel.relative_error);
//! # Ok::<(), subprune::Error>(())
//! ```

#![warn(missing_docs)]

pub mod analysis;
pub mod backend;
pub mod bench;
pub mod demo;
pub mod error;
pub mod exec;
pub mod gpu;
pub mod images;
pub mod ir;
pub mod layer;
pub mod linalg;
pub mod npy;
pub mod onnx;
pub mod prune;
pub mod rng;
pub mod synthetic;
pub mod tensor;
pub mod units;
pub mod validate;

pub use backend::cpu::CpuBackend;
pub use backend::gpu::GpuBackend;
pub use error::{Error, Result};
pub use layer::{
    layer_stats, layer_stats_with_progress, reweight, run_greedy, select, select_from_run, Backend,
    Budget, Consumer, ConvOptions, CostPlan, GreedyForm, GreedyRun, LayerProblem, LayerSelection,
    LayerStats, Reweighted, SelectOptions, Stage, DEFAULT_BATCH_IMAGES, DEFAULT_DEPENDENCE_TOL,
};
pub use tensor::{Tensor, TensorView};
