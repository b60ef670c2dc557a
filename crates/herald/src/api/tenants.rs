//! Tenants' own settings: `GET /api/v1/tenants` lists the tenants with where their settings
//! come from, the settings in force and what they use; `GET`, `PUT` and `DELETE
//! /api/v1/tenants/{name}` look at, set and remove one tenant's (`broker::tenants`).
//!
//! Changing settings concerns the whole node: only a node-wide key may (a tenant's key may
//! look at its own tenant). A tenant the tenants file defines is changed in the file, not
//! here (409 `managed_by_file`). A change is answered once the store has it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::scope::Scope;
use super::{ApiError, ApiState, Authorized, admin, query_of};
use crate::broker::tenants::{SettingsRefused, limits_from};
use crate::broker::{Broker, Tenant};
use crate::config::TenantLimits;
use crate::config::valid_tenant;

/// `GET /api/v1/tenants` page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Page size (default 100, at most 1000).
    limit: Option<usize>,
    /// The page after this tenant (the previous page's `next`).
    after: Option<String>,
}

/// Settings as JSON: the keys set, without those left out.
fn settings(limits: &TenantLimits) -> Value {
    let mut v = json!(limits);
    if let Some(map) = v.as_object_mut() {
        map.retain(|_, value| !value.is_null());
    }
    v
}

/// A tenant: where its settings come from, its own, those in force, what it uses.
fn view(broker: &Broker, tenant: &Tenant) -> Value {
    let defaults = &broker.config().tenants.defaults;
    let mut usage = super::stats::figures(tenant, "tenant");
    if let Some(map) = usage.as_object_mut() {
        map.remove("tenant");
    }
    json!({
        "name": &*tenant.name,
        "known": tenant.known(),
        "source": broker.tenant_source(&tenant.name).label(),
        "own": settings(&tenant.own()),
        "limits": settings(&tenant.limits(defaults)),
        "usage": usage,
    })
}

/// The `{name}` path segment: a tenant name, or 400 naming `name`.
fn name_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let name = path
        .map(|Path(p)| p)
        .map_err(|e| ApiError::field("name", e.body_text()))?;
    if !valid_tenant(&name) {
        return Err(ApiError::field(
            "name",
            format!(
                "not a tenant name: 1 to {} bytes without control characters",
                crate::config::MAX_TENANT_LEN
            ),
        ));
    }
    Ok(name)
}

fn unknown(name: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_tenant",
        Some("name"),
        format!("tenant {name:?} {why}"),
    )
}

fn refused(e: SettingsRefused) -> ApiError {
    match &e {
        SettingsRefused::ManagedByFile { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "managed_by_file",
            Some("name"),
            e.to_string(),
        ),
        SettingsRefused::NotSet(name) => unknown(name, "has no settings set through the API"),
        SettingsRefused::Unrecordable(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            e.to_string(),
        ),
    }
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.node_wide("listing the tenants")?;
    let q = query_of(query)?;
    let limit = admin::check_limit(q.limit)?;
    let broker = &state.broker;
    let items = broker
        .tenants()
        .iter()
        .filter(|t| q.after.as_deref().is_none_or(|a| &*t.name > a))
        .map(|t| (t.name.to_string(), view(broker, t)))
        .collect();
    Ok(Json(admin::page(items, limit)))
}

pub(super) async fn one(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = name_of(name)?;
    if let Scope::Tenant(own) = &auth.scope
        && *own != name
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            Some("name"),
            format!("this API key is scoped to tenant {own:?}; it cannot look at tenant {name:?}"),
        ));
    }
    let broker = &state.broker;
    match (broker.find_tenant(&name), &auth.scope) {
        (Some(tenant), _) => Ok(Json(view(broker, &tenant))),
        // A tenant's own key sees its tenant before any client has used it.
        (None, Scope::Tenant(_)) => Ok(Json(view(broker, &Tenant::named(&name)))),
        (None, Scope::Node) => Err(unknown(
            &name,
            "does not exist on this node (a client, a publication, the tenants file or PUT \
             creates it)",
        )),
    }
}

pub(super) async fn put(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth.node_wide("changing a tenant's settings")?;
    let name = name_of(name)?;
    let body = super::body(body)?;
    let Value::Object(object) = super::json(&body)? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            None,
            "the body must be a JSON object of settings (the keys of [tenants.defaults])",
        ));
    };
    let limits = limits_from(&object).map_err(|e| match e.key {
        Some(key) => ApiError::field(&key, e.message),
        None => ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", None, e.message),
    })?;
    let broker = &state.broker;
    let (created, ticket) = broker.put_tenant_settings(&name, limits).map_err(refused)?;
    super::publish::wait_durable(&state, ticket).await?;
    tracing::info!(
        tenant = name,
        created,
        "tenant settings set through the API"
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let tenant = broker.tenant(&name);
    Ok((status, Json(view(broker, &tenant))).into_response())
}

pub(super) async fn delete(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.node_wide("changing a tenant's settings")?;
    let name = name_of(name)?;
    let broker = &state.broker;
    let ticket = broker.remove_tenant_settings(&name).map_err(refused)?;
    super::publish::wait_durable(&state, ticket).await?;
    tracing::info!(tenant = name, "tenant settings removed through the API");
    let tenant = broker.tenant(&name);
    Ok(Json(view(broker, &tenant)))
}
