//! `/v1/users/...`: listing, lookup, grants, state changes, deletion, login tokens.

use axum::response::Response;
use memberspot_wire::DeleteUsersResult;
use serde_json::Value;

use super::Ctx;
use crate::config::Shapes;
use crate::errors::ApiError;
use crate::render;
use crate::school::{Grant, SchoolError, UserFilter};
use crate::validate::{BodyCheck, QueryCheck, is_email, path_email};

/// Answers the user `uid` as it is now.
pub(super) fn user_answer(ctx: &Ctx<'_>, uid: &str) -> Result<Response, ApiError> {
    let user = ctx.state.read(|s| {
        s.user_by_uid(uid)
            .map(|u| render::user(s, u, ctx.now, ctx.shapes))
    });
    ctx.ok(&user.ok_or(SchoolError::UserNotFound)?)
}

pub(super) fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let mut q = QueryCheck::new(&ctx.query);
    let page = q.page();
    let filter = UserFilter {
        offer_id: q.optional_string("offerId"),
        course_id: q.optional_string("courseId"),
        active: q.optional_bool("active"),
    };
    q.finish()?;
    let repeat = super::repeat_cursor(ctx, page.last_loaded_id.as_deref());
    let answer = ctx.state.read(|s| {
        let (users, next_page) = s.list_users(
            page.last_loaded_id.as_deref(),
            page.page_length,
            &filter,
            ctx.now,
        );
        let users = users
            .into_iter()
            .map(|u| render::user(s, u, ctx.now, ctx.shapes))
            .collect();
        let next_page = next_page.map(|next| repeat.clone().unwrap_or(next));
        render::users_page(users, next_page, ctx.shapes)
    });

    ctx.ok(&answer)
}

pub(super) fn find_by_mail(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let email = path_email(ctx.param(0))?;
    let user = ctx.state.read(|s| {
        s.user_by_email(&email)
            .map(|u| render::user(s, u, ctx.now, ctx.shapes))
    });
    ctx.ok(&user.ok_or(SchoolError::UserNotFound)?)
}

pub(super) fn grant(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let mut v = BodyCheck::new(&ctx.body);
    let email = v.email("email");
    let offer_id = v.required_string("grantOffer");
    let firstname = v.optional_string("firstname");
    let name = v.optional_string("name");
    let order_id = v.optional_string("orderId");
    v.finish()?;
    let (Some(email), Some(offer_id), Some(firstname), Some(name), Some(order_id)) =
        (email, offer_id, firstname, name, order_id)
    else {
        return Err(ApiError::internal());
    };
    // Empty strings carry no name or order; storing them would only confuse filters.
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let grant = Grant {
        email,
        offer_id,
        firstname: non_empty(firstname),
        name: non_empty(name),
        order_id: non_empty(order_id),
    };
    let uid = ctx
        .state
        .write(|s| s.grant(grant, ctx.now, || ctx.state.new_id()))?;
    user_answer(ctx, &uid)
}

/// The `active` field of the state routes: omitted or null removes.
fn state_body(ctx: &Ctx<'_>, key_field: &str) -> Result<(String, String, Option<bool>), ApiError> {
    let mut v = BodyCheck::new(&ctx.body);
    let email = v.email("email");
    let key = v.required_string(key_field);
    let active = v.optional_bool("active");
    v.finish()?;
    match (email, key, active) {
        (Some(email), Some(key), Some(active)) => Ok((email, key, active)),
        _ => Err(ApiError::internal()),
    }
}

pub(super) fn set_offer_state(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let (email, offer_id, active) = state_body(ctx, "offerId")?;
    let uid = ctx
        .state
        .write(|s| s.set_offer_state(&email, &offer_id, active))?;
    state_answer(ctx, &uid, "offerId", &offer_id, active)
}

/// The member, or in the alternate shapes `{active, email, offerId|orderId}`.
fn state_answer(
    ctx: &Ctx<'_>,
    uid: &str,
    key: &str,
    value: &str,
    active: Option<bool>,
) -> Result<Response, ApiError> {
    let email = ctx
        .state
        .read(|s| s.user_by_uid(uid).map(|u| u.email.clone()));
    let email = email.ok_or(SchoolError::UserNotFound)?;
    match render::state_answer(key, value, &email, active, ctx.shapes) {
        Some(answer) => ctx.ok(&answer),
        None => user_answer(ctx, uid),
    }
}

pub(super) fn set_order_state(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let (email, order_id, active) = state_body(ctx, "orderId")?;
    let uid = ctx
        .state
        .write(|s| s.set_order_state(&email, &order_id, active))?;
    state_answer(ctx, &uid, "orderId", &order_id, active)
}

pub(super) fn set_offer_expires(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let mut v = BodyCheck::new(&ctx.body);
    let email = v.email("email");
    let offer_id = v.required_string("offerId");
    let expires_at = v.optional_date("expiresAt");
    v.finish()?;
    let (Some(email), Some(offer_id), Some(expires_at)) = (email, offer_id, expires_at) else {
        return Err(ApiError::internal());
    };
    let uid = ctx
        .state
        .write(|s| s.set_offer_expires(&email, &offer_id, expires_at))?;
    user_answer(ctx, &uid)
}

pub(super) fn delete_users(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let mut v = BodyCheck::new(&ctx.body);
    let emails = v.array("emails");
    if emails.is_some_and(Vec::is_empty) {
        v.fail("emails must contain at least 1 elements");
    }
    v.finish()?;
    // Non-strings and malformed addresses are ignored, like unknown ones.
    let wanted: Vec<&str> = emails
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|e| is_email(e))
        .collect();
    let deleted = ctx.state.write(|s| s.delete_users(wanted));
    if ctx.shapes == Shapes::Alternate {
        return ctx.ok_text("ok");
    }
    ctx.ok(&DeleteUsersResult {
        deleted_count: Some(deleted.len() as u64),
        deleted: Some(deleted),
        ..DeleteUsersResult::default()
    })
}

pub(super) fn login_token(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let uid = ctx.param(0).trim();
    if ctx.state.read(|s| s.user_by_uid(uid).is_none()) {
        return Err(SchoolError::UserNotFound.into());
    }
    ctx.ok(&render::login_token(ctx.state.new_token(), ctx.shapes))
}
