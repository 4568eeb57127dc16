//! Reading a model's structure for pruning: which channels flow from which producer to which
//! consumer. [`summary`]: what `subprune info` prints.

pub mod summary;
