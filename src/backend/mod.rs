//! The compute backends: implementations of the layer engine's backend traits
//! ([`crate::layer::backend`], re-exported here), a CPU one (the baseline) and a wgpu one, and
//! the choice between them ([`choice`]).
//!
//! A backend does the two kinds of heavy work of `docs/ALGORITHM.md` §2: accumulating the Gram
//! statistics over batches of images, and, per greedy step, scoring every candidate's marginal
//! gain and downdating the Schur complement. The host ([`crate::layer::greedy`]) keeps the
//! selection (order, gains, error curve) and picks the argmax; the backend keeps the state it
//! needs (`E`, `R`) where it is cheapest to update.

pub mod choice;
pub mod cpu;
pub mod gpu;

pub use crate::layer::backend::*;
pub use crate::layer::{KernelClock, StatsPhases};
