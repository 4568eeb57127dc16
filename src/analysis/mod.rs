//! Reading a model's structure for pruning: which channels are kept or removed together
//! ([`channels`]: channel groups, their producers, pass-throughs and consumers), by one rule per
//! op ([`rules`]). [`summary`]: what `subprune info` prints.

pub mod channels;
mod follow;
pub(crate) mod rules;
mod shuffle;
pub mod summary;

pub use channels::{
    analyze, ChannelAnalysis, ChannelConsumer, ChannelEdit, ChannelGroup, ConsumerKind,
    ConsumerMap, CoupledLayer, GroupScope,
};
