//! The Azure Container Instances backend (in progress).

use std::time::Duration;

use crate::infrastructure::{ExitInfo, InfraError, Infrastructure, JobContext, RunSignals};

/// Runs flow runs as ACI container groups.
pub struct AciInfrastructure {}

/// Errors configuring Azure access.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AciConfigError(String);

impl AciInfrastructure {
    /// Configure from the process environment.
    pub fn from_env() -> Result<Self, AciConfigError> {
        Err(AciConfigError("the ACI backend is not built yet".into()))
    }
}

impl Infrastructure for AciInfrastructure {
    type Job = ();
    fn prepare(&self, _ctx: &JobContext) -> Result<(), InfraError> {
        Err(InfraError::invalid("not built"))
    }
    fn identifier(&self, _job: &()) -> String {
        String::new()
    }
    async fn launch(&self, _job: &()) -> Result<(), InfraError> {
        Err(InfraError::permanent("not built"))
    }
    async fn watch(&self, _job: &(), _s: RunSignals) -> Result<Option<ExitInfo>, InfraError> {
        Err(InfraError::permanent("not built"))
    }
    async fn kill(&self, _job: &(), _g: Duration) -> Result<(), InfraError> {
        Ok(())
    }
    async fn cleanup(&self, _job: &()) -> Result<(), InfraError> {
        Ok(())
    }
}
