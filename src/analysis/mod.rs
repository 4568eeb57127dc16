//! Reading a model's structure for pruning: which channels flow from which producer to which
//! consumer ([`channels`]: prunable and coupled producers). [`summary`]: what `subprune info`
//! prints.

pub mod channels;
pub mod summary;

pub use channels::{
    analyze, ChannelAnalysis, ChannelConsumer, ConsumerKind, CoupledLayer, PrunableLayer,
};
