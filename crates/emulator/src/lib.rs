//! placeholder
pub mod arm_template;
pub mod rbac;
