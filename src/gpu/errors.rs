//! GPU failures as errors: wgpu's error scopes around each operation, and what the device
//! callbacks report (a lost device, an error outside any scope).

use super::Gpu;
use crate::error::{Error, Result};

/// What the device callbacks report.
#[derive(Default)]
pub(super) struct Health {
    /// Why the device was lost; every later operation fails with it.
    pub(super) lost: Option<String>,
    /// An error raised outside any error scope, reported by the next operation.
    pub(super) uncaptured: Option<String>,
}

impl Gpu {
    /// Fails if the device was lost (for good), or once for an error no scope caught.
    pub(crate) fn check_health(&self) -> Result<()> {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(msg) = &h.lost {
            return Err(Error::Gpu(format!("{}: {msg}", self.info.name)));
        }
        match h.uncaptured.take() {
            Some(msg) => Err(Error::Gpu(format!(
                "{}: uncaptured error: {msg}",
                self.info.name
            ))),
            None => Ok(()),
        }
    }

    /// Runs `f` inside out-of-memory, validation and internal error scopes: any wgpu error it
    /// causes becomes an [`Error::Gpu`] naming `what`.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_health()?;
        let scope = ErrorScopes::push(&self.device);
        let out = f();
        let popped = scope.pop(what);
        self.check_health()?;
        let value = out?;
        popped?;
        Ok(value)
    }
}

/// The three error scopes around one operation. Fields drop in declaration order, which is the
/// reverse of the order the scopes were pushed in, as wgpu requires.
pub(crate) struct ErrorScopes {
    internal: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
    oom: wgpu::ErrorScopeGuard,
}

impl ErrorScopes {
    pub(crate) fn push(device: &wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        Self {
            internal,
            validation,
            oom,
        }
    }

    pub(crate) fn pop(self, what: &str) -> Result<()> {
        let internal = pollster::block_on(self.internal.pop());
        let validation = pollster::block_on(self.validation.pop());
        let oom = pollster::block_on(self.oom.pop());
        match oom.or(validation).or(internal) {
            None => Ok(()),
            Some(wgpu::Error::OutOfMemory { .. }) => {
                Err(Error::Gpu(format!("{what}: out of GPU memory")))
            }
            Some(e) => Err(Error::Gpu(format!("{what}: {e}"))),
        }
    }
}
