//! Custom user properties: definitions and values.

use axum::response::Response;
use serde_json::Value;

use super::Ctx;
use super::users::user_answer;
use crate::errors::ApiError;
use crate::render;
use crate::school::School;
use crate::validate::BodyCheck;

/// `GET /v1/custom-user-properties/list`: a bare array of definitions.
pub(super) fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let school_id = ctx.state.school_id();
    let props: Vec<Value> = ctx.state.read(|s| {
        s.properties
            .iter()
            .map(|p| render::property(School::property_to_wire(p), &school_id, ctx.shapes))
            .collect()
    });
    ctx.ok(&props)
}

/// `POST /v1/users/set-custom-user-properties`: `{email, properties: [{id|propertyId, value}]}`.
pub(super) fn set(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let mut v = BodyCheck::new(&ctx.body);
    let email = v.email("email");
    let mut values = Vec::new();
    if let Some(items) = v.array("properties") {
        for (i, item) in items.iter().enumerate() {
            let Value::Object(item) = item else {
                v.fail(format!(
                    "nested property properties.{i} must be either object or array"
                ));
                continue;
            };
            // Clients disagree on the key name; both are accepted.
            let id = item
                .get("id")
                .filter(|x| !x.is_null())
                .or_else(|| item.get("propertyId"));
            let id = match id.and_then(Value::as_str).map(str::trim) {
                Some(id) if !id.is_empty() => Some(id.to_string()),
                _ => {
                    v.fail(format!("properties.{i}.id must be a string"));
                    None
                }
            };
            let value = match item.get("value") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => {
                    v.fail(format!("properties.{i}.value must be a string"));
                    None
                }
            };
            if let (Some(id), Some(value)) = (id, value) {
                values.push((id, value));
            }
        }
    }
    v.finish()?;
    let Some(email) = email else {
        return Err(ApiError::internal());
    };
    let uid = ctx.state.write(|s| s.set_properties(&email, &values))?;
    user_answer(ctx, &uid)
}
