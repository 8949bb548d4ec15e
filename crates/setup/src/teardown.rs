//! `teardown`: delete what setup created for a pool, found by its tags, and nothing else.
//!
//! Resources are found by the `managed-by=prefect-aci-setup` and `prefect-aci-pool=<pool>`
//! tags (role definitions and the work pool by the same marker in their description; role
//! assignments by the stable names setup gives them). They are deleted in the reverse order of
//! creation: worker group, role assignments, registry, identity, custom role, work pool, and
//! finally the resource group — only when setup created it and nothing else is left in it
//! (flow-run container groups the worker started, or anything a user added, keep it alive).

use serde_json::Value;

use crate::roles::{self, ACR_PULL};
use crate::{api, arm_error, Setup, SetupError, MANAGED_BY_TAG, MANAGED_BY_VALUE, POOL_TAG};

/// One thing teardown deletes or keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownItem {
    /// What it is (`container group`, `registry`, ...).
    pub kind: &'static str,
    /// Its id or name.
    pub id: String,
    /// `None`: deleted (or will be); `Some(reason)`: kept.
    pub kept: Option<String>,
}

/// What teardown found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TeardownPlan {
    /// In deletion order.
    pub items: Vec<TeardownItem>,
}

fn tagged(v: &Value, pool: &str) -> bool {
    v.pointer(&format!("/tags/{MANAGED_BY_TAG}"))
        .and_then(Value::as_str)
        == Some(MANAGED_BY_VALUE)
        && v.pointer(&format!("/tags/{POOL_TAG}"))
            .and_then(Value::as_str)
            == Some(pool)
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

impl Setup {
    async fn list_tagged(
        &self,
        kind: &'static str,
        path: &str,
        api_version: &str,
    ) -> Result<Vec<Value>, SetupError> {
        match self.arm.list::<Value>(path, api_version).await {
            Ok(v) => Ok(v
                .into_iter()
                .filter(|r| tagged(r, &self.options.pool))
                .collect()),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(arm_error(kind, e)),
        }
    }

    /// Finds what setup created for the pool; with `apply`, deletes it. Resources without
    /// setup's tags are never touched.
    pub async fn teardown(
        &self,
        apply: bool,
        progress: &mut dyn FnMut(&TeardownItem),
    ) -> Result<TeardownPlan, SetupError> {
        let pool = self.options.pool.clone();
        let rg = self.options.rg_scope();
        let mut plan = TeardownPlan::default();
        let mut emit = |plan: &mut TeardownPlan, item: TeardownItem| {
            if apply {
                progress(&item);
            }
            plan.items.push(item);
        };

        let rg_value = self
            .arm
            .get_opt::<Value>(&rg, api::RESOURCES)
            .await
            .map_err(|e| arm_error("resource group", e))?;
        let Some(rg_value) = rg_value else {
            return Ok(plan);
        };

        // 1. The worker's container group(s).
        let groups_path = format!("{rg}/providers/Microsoft.ContainerInstance/containerGroups");
        for g in self
            .list_tagged("container group", &groups_path, api::ACI)
            .await?
        {
            let id = id_of(&g);
            if apply {
                self.delete(&id, api::ACI, "container group").await?;
            }
            emit(
                &mut plan,
                TeardownItem {
                    kind: "container group",
                    id,
                    kept: None,
                },
            );
        }

        // 2. Role assignments of tagged identities, by the names setup gives them.
        let identities_path =
            format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities");
        let identities = self
            .list_tagged("identity", &identities_path, api::IDENTITY)
            .await?;
        let registries_path = format!("{rg}/providers/Microsoft.ContainerRegistry/registries");
        let registries = self
            .list_tagged("registry", &registries_path, api::REGISTRY)
            .await?;
        for identity in &identities {
            let principal = identity
                .pointer("/properties/principalId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut scopes = vec![(rg.clone(), self.role_id())];
            scopes.extend(registries.iter().map(|r| (id_of(r), self.acr_pull_id())));
            for (scope, role) in scopes {
                let name = roles::assignment_name(&scope, principal, &role);
                let path =
                    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
                let exists = self
                    .arm
                    .get_opt::<Value>(&path, api::AUTHORIZATION)
                    .await
                    .map_err(|e| arm_error("role assignment", e))?
                    .is_some();
                if exists {
                    if apply {
                        self.delete(&path, api::AUTHORIZATION, "role assignment")
                            .await?;
                    }
                    let role_name = if role.ends_with(ACR_PULL) {
                        "AcrPull"
                    } else {
                        roles::ROLE_NAME
                    };
                    emit(
                        &mut plan,
                        TeardownItem {
                            kind: "role assignment",
                            id: format!("{role_name} on {scope}"),
                            kept: None,
                        },
                    );
                }
            }
        }

        // 3. Registries, 4. identities.
        for (kind, items) in [("registry", &registries), ("identity", &identities)] {
            for r in items {
                let id = id_of(r);
                if apply {
                    let version = if kind == "registry" {
                        api::REGISTRY
                    } else {
                        api::IDENTITY
                    };
                    self.delete(&id, version, kind).await?;
                }
                emit(
                    &mut plan,
                    TeardownItem {
                        kind,
                        id,
                        kept: None,
                    },
                );
            }
        }

        // 5. The custom role, if setup made it for this pool and nobody else uses it.
        let role_path = format!(
            "{rg}/providers/Microsoft.Authorization/roleDefinitions/{}",
            self.role_guid()
        );
        if let Some(role) = self
            .arm
            .get_opt::<Value>(&role_path, api::AUTHORIZATION)
            .await
            .map_err(|e| arm_error("custom role", e))?
        {
            let description = role
                .pointer("/properties/description")
                .and_then(Value::as_str)
                .unwrap_or("");
            if description.contains(&self.marker()) {
                let mut kept = None;
                if apply {
                    match self.arm.delete(&role_path, api::AUTHORIZATION).await {
                        Ok(d) => d.wait().await.map_err(|e| arm_error("custom role", e))?,
                        Err(e) if e.code() == Some("RoleDefinitionHasAssignments") => {
                            kept = Some("still assigned to other principals".to_string());
                        }
                        Err(e) => return Err(arm_error("custom role", e)),
                    }
                }
                emit(
                    &mut plan,
                    TeardownItem {
                        kind: "custom role",
                        id: self.role_id(),
                        kept,
                    },
                );
            }
        }

        // 6. The work pool, if setup created it.
        let existing =
            self.prefect
                .read_work_pool(&pool)
                .await
                .map_err(|source| SetupError::Prefect {
                    step: "work pool".into(),
                    source,
                })?;
        if existing.is_some() {
            let raw = self
                .prefect
                .raw_json(
                    reqwest_method_get(),
                    &format!("/work_pools/{}", encode(&pool)),
                    None,
                )
                .await
                .map_err(|source| SetupError::Prefect {
                    step: "work pool".into(),
                    source,
                })?;
            if raw["description"]
                .as_str()
                .is_some_and(|d| d.contains(&self.marker()))
            {
                if apply {
                    self.prefect
                        .raw_json(
                            reqwest_method_delete(),
                            &format!("/work_pools/{}", encode(&pool)),
                            None,
                        )
                        .await
                        .map_err(|source| SetupError::Prefect {
                            step: "work pool".into(),
                            source,
                        })?;
                }
                emit(
                    &mut plan,
                    TeardownItem {
                        kind: "work pool",
                        id: pool.clone(),
                        kept: None,
                    },
                );
            }
        }

        // 7. The resource group: only when setup created it and it is now empty of what we
        //    can see (container groups, identities, registries).
        if tagged(&rg_value, &pool) {
            let deleted: Vec<String> = plan
                .items
                .iter()
                .filter(|i| i.kept.is_none())
                .map(|i| i.id.to_ascii_lowercase())
                .collect();
            let mut others = 0usize;
            for (path, version) in [
                (&groups_path, api::ACI),
                (&identities_path, api::IDENTITY),
                (&registries_path, api::REGISTRY),
            ] {
                let all = self
                    .arm
                    .list::<Value>(path, version)
                    .await
                    .map_err(|e| arm_error("resource group", e))?;
                others += all
                    .iter()
                    .filter(|r| !deleted.contains(&id_of(r).to_ascii_lowercase()))
                    .count();
            }
            let kept = (others > 0)
                .then(|| format!("still holds {others} resource(s) setup did not create"));
            if apply && kept.is_none() {
                self.delete(&rg, api::RESOURCES, "resource group").await?;
            }
            emit(
                &mut plan,
                TeardownItem {
                    kind: "resource group",
                    id: rg.clone(),
                    kept,
                },
            );
        }
        Ok(plan)
    }

    async fn delete(&self, path: &str, api_version: &str, kind: &str) -> Result<(), SetupError> {
        self.arm
            .delete(path, api_version)
            .await
            .map_err(|e| arm_error(kind, e))?
            .wait()
            .await
            .map_err(|e| arm_error(kind, e))
    }
}

fn reqwest_method_get() -> reqwest::Method {
    reqwest::Method::GET
}

fn reqwest_method_delete() -> reqwest::Method {
    reqwest::Method::DELETE
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
