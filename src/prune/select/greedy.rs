//! The greedy of the paper (`docs/ALGORITHM.md` §2): one run per layer gives the order and the
//! error curve for every budget, so runs are kept per layer name and reused for other sizes.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{check_keep, LayerContext, Selection, Selector};
use crate::error::Result;
use crate::layer::greedy::GreedyRun;

/// Greedy selection; remembers its run of each layer (by name) for later budgets. Use one
/// instance per set of statistics.
#[derive(Default)]
pub struct Greedy {
    runs: Mutex<HashMap<String, GreedyRun>>,
}

impl Greedy {
    /// The full greedy run of a layer (cached).
    pub fn run(
        &self,
        layer: &LayerContext<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<GreedyRun> {
        if let Some(r) = self.runs.lock().expect("greedy cache").get(layer.name) {
            return Ok(r.clone());
        }
        let run = crate::layer::greedy::run_greedy_shared(
            layer.backend,
            layer.stats,
            layer.dependence_tol,
            progress,
        )?;
        self.runs
            .lock()
            .expect("greedy cache")
            .insert(layer.name.to_string(), run.clone());
        Ok(run)
    }
}

impl Selector for Greedy {
    fn name(&self) -> String {
        "greedy".into()
    }

    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Selection> {
        check_keep(layer, keep)?;
        let run = self.run(layer, progress)?;
        Ok(Selection {
            kept: run.kept(keep),
            row_scale: None,
            greedy: Some(run),
        })
    }
}
