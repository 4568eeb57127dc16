//! Progress and interruption while the GIL is released: the library's progress callbacks land in
//! a [`Hook`], which (at most every [`INTERVAL`]) takes the GIL, checks for signals (Ctrl-C) and
//! calls the Python callback. A signal or an exception from the callback is kept, and the work
//! stops at the next forward batch ([`Checked`] wraps every executor); the entry point then raises
//! that exception (`KeyboardInterrupt` for Ctrl-C) instead of the library's result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use subprune::exec::{Executor, Plan, TapSink};
use subprune::ir::{Graph, ValueId};
use subprune::{Error, Tensor, TensorView};

/// Least time between two calls into Python (the first and last step of a stage always call).
pub const INTERVAL: Duration = Duration::from_millis(50);

/// The reason the library gets when a hook stops the work; never shown (the kept Python
/// exception is raised instead).
const STOPPED: &str = "stopped from Python (an exception in the progress callback, or Ctrl-C)";

/// Where progress goes and where a Python exception raised meanwhile waits.
pub struct Hook {
    callback: Option<Py<PyAny>>,
    failed: Mutex<Option<PyErr>>,
    stop: AtomicBool,
    last: Mutex<Option<Instant>>,
}

impl Hook {
    /// A hook calling `callback(stage, done, total)` (if any) and checking for signals.
    pub fn new(callback: Option<Py<PyAny>>) -> Arc<Hook> {
        Arc::new(Hook {
            callback,
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
            last: Mutex::new(None),
        })
    }

    /// Reports `done` of `total` in `stage` (called with the GIL released).
    pub fn report(&self, stage: &str, done: usize, total: usize) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let edge = done == 0 || done >= total;
            if !edge && last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        Python::attach(|py| {
            let called = py.check_signals().and_then(|()| match &self.callback {
                Some(cb) => cb.call1(py, (stage, done, total)).map(drop),
                None => Ok(()),
            });
            if let Err(e) = called {
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                self.stop.store(true, Ordering::Relaxed);
            }
        });
    }

    /// An error (which stops the library's work) once a Python exception is waiting.
    pub fn check(&self) -> subprune::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(Error::InvalidArgument(STOPPED.into()));
        }
        Ok(())
    }

    /// The result of the work as Python sees it: the waiting Python exception if there is one,
    /// else the library's result with its error converted.
    pub fn finish<T>(&self, result: subprune::Result<T>) -> PyResult<T> {
        if let Some(e) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(e);
        }
        result.map_err(crate::to_py)
    }
}

/// An executor that stops before each batch once its hook has a Python exception waiting.
pub struct Checked {
    inner: Box<dyn Executor>,
    hook: Arc<Hook>,
}

impl Checked {
    /// The executor for `graph` on `gpu` (or the CPU), checked by `hook`.
    pub fn on(
        gpu: Option<&subprune::GpuBackend>,
        graph: &Graph,
        hook: &Arc<Hook>,
    ) -> subprune::Result<Box<dyn Executor>> {
        Ok(Box::new(Checked {
            inner: subprune::exec::executor_on(gpu, graph)?,
            hook: hook.clone(),
        }))
    }
}

impl Executor for Checked {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn plan(&self) -> &Plan {
        self.inner.plan()
    }

    fn run_batch(
        &self,
        input: TensorView<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> subprune::Result<Vec<Tensor>> {
        self.hook.check()?;
        self.inner.run_batch(input, taps, on_tap)
    }
}
