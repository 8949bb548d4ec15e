//! Serde models (DTOs) of the Azure JSON that prefect-aci speaks and emulates.
//!
//! **API Boundary:** these types are the wire format shared by the ARM client
//! (`azure-arm`) and the local emulator (`aci-emulator`). They carry no IO and no behaviour
//! beyond (de)serialization, so both sides agree on one definition of every field.
//!
//! # Layout
//! - [`error`]: the ARM error envelope `{"error":{"code","message","details"}}`.
//! - [`container_group`]: `Microsoft.ContainerInstance/containerGroups` with containers,
//!   instance views, events, environment variables and registry credentials.
//! - [`operation`]: the async-operation status document polled through `Azure-AsyncOperation`.
//! - [`list`]: paged list results (`value` + `nextLink`).
//! - [`auth`]: AAD v2 token responses and errors, and IMDS token responses.
//! - [`identity`]: user-assigned managed identities.
//! - [`resource_group`]: resource groups.
//!
//! # Conventions
//! Field names follow the REST specs (camelCase). Every optional field is `Option` and skipped
//! when `None`, so a DTO read from the service and written back does not invent `null`s. Types
//! whose full schema is large (container group and container properties) keep unknown fields
//! in an `extra` map, so a round trip through these types loses nothing (ports, volumes, ...).

pub mod auth;
pub mod container_group;
pub mod error;
pub mod identity;
pub mod list;
pub mod operation;
pub mod resource_group;

pub use auth::{AadError, AadTokenResponse, ImdsTokenResponse};
pub use container_group::*;
pub use error::{ErrorDetail, ErrorResponse};
pub use identity::{UserAssignedIdentity, UserAssignedIdentityProperties};
pub use list::ListResult;
pub use operation::{AsyncOperationStatus, OperationStatus};
pub use resource_group::{ResourceGroup, ResourceGroupProperties};
