//! Paged list results.
//!
//! ARM lists return `{"value":[...],"nextLink":"..."}`. `nextLink` is an absolute URL that
//! already carries `api-version` and the continuation token; clients follow it verbatim until
//! it is absent (or `null`).

use serde::{Deserialize, Serialize};

/// One page of a list operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult<T> {
    /// The items of this page.
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    /// The URL of the next page; absent on the last page.
    #[serde(rename = "nextLink", default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}
