//! The answers in the shape mode the sandbox speaks ([`Shapes`]). The canonical form
//! comes from the shared wire types; the alternate form is derived from it, so the two
//! modes differ only in form, never in content.

use chrono::{DateTime, Utc};
use memberspot_wire::{CustomUserProperty, LoginToken, Offer};
use serde_json::{Map, Value, json};

use crate::config::Shapes;
use crate::school::{School, UserRec};

/// Where the alternate login link points: a host that cannot exist (`.example`), so a
/// sandbox link never reaches a real school.
const LOGIN_URL: &str = "https://sandbox.memberspot.example/auth/login?token=";

fn object(v: impl serde::Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Moves `from` to `to`, keeping its value.
fn rename(map: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = map.remove(from) {
        map.insert(to.to_string(), v);
    }
}

/// A member as the find, list and write answers show them.
pub fn user(school: &School, user: &UserRec, now: DateTime<Utc>, shapes: Shapes) -> Value {
    let mut map = object(school.user_to_wire(user, now));
    if shapes == Shapes::Alternate {
        rename(&mut map, "createdAt", "created");
        rename(&mut map, "customProperties", "customUserProperties");
        // Guess: a member is active while one of their holdings grants access.
        let active = user.holdings.iter().any(|h| h.is_active(now));
        map.insert("active".into(), Value::Bool(active));
        let progress: Vec<Value> = school
            .progress_course_ids(user)
            .iter()
            .map(|course| {
                let p = user.progress.get(course);
                json!({
                    "courseId": course,
                    "activePosts": p.map_or(0, |p| p.active_posts.len()),
                    "completedPosts": p.map_or(0, |p| p.completed_posts.len()),
                })
            })
            .collect();
        map.insert("progress".into(), Value::Array(progress));
    }
    Value::Object(map)
}

/// A page of members.
pub fn users_page(users: Vec<Value>, next_page: Option<String>, shapes: Shapes) -> Value {
    let list = match shapes {
        Shapes::Documented => "users",
        Shapes::Alternate => "data",
    };
    json!({ list: users, "nextPage": next_page })
}

pub fn offer(offer: Offer, shapes: Shapes) -> Value {
    let mut map = object(offer);
    if shapes == Shapes::Alternate {
        rename(&mut map, "courseIds", "hasCourseIds");
    }
    Value::Object(map)
}

pub fn property(property: CustomUserProperty, school_id: &str, shapes: Shapes) -> Value {
    let mut map = object(property);
    if shapes == Shapes::Alternate {
        map.insert("schoolId".into(), Value::String(school_id.to_string()));
    }
    Value::Object(map)
}

pub fn login_token(token: String, shapes: Shapes) -> Value {
    let login_url = (shapes == Shapes::Alternate).then(|| format!("{LOGIN_URL}{token}"));
    serde_json::to_value(LoginToken { token, login_url }).unwrap_or(Value::Null)
}

/// What a state change answers in the alternate mode (`None`: the member, as documented):
/// `{active, email, offerId}` or `{active, email, orderId}`; `active` is left out when
/// the holding was removed.
pub fn state_answer(
    key: &str,
    value: &str,
    email: &str,
    active: Option<bool>,
    shapes: Shapes,
) -> Option<Value> {
    (shapes == Shapes::Alternate).then(|| {
        let mut map = Map::new();
        if let Some(active) = active {
            map.insert("active".into(), Value::Bool(active));
        }
        map.insert("email".into(), Value::String(email.to_string()));
        map.insert(key.into(), Value::String(value.to_string()));
        Value::Object(map)
    })
}
