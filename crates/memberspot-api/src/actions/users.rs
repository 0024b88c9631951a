use memberspot_wire::{
    DeleteUsersBody, DeleteUsersResult, GrantUserOfferBody, ListUsersQuery, LoginToken,
    SetOfferExpiresBody, SetOfferStateBody, SetOrderStateBody, StateAnswer, Timestamp, User,
    UsersPage,
};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{Action, Idempotency, seg, to_body};

/// `GET /users/list`: one page of members, optionally filtered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListUsers {
    pub query: ListUsersQuery,
}

impl ListUsers {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn offer(mut self, offer_id: impl Into<String>) -> Self {
        self.query.offer_id = Some(offer_id.into());
        self
    }
    pub fn course(mut self, course_id: impl Into<String>) -> Self {
        self.query.course_id = Some(course_id.into());
        self
    }
    pub fn active(mut self, active: bool) -> Self {
        self.query.active = Some(active);
        self
    }
    pub fn page_length(mut self, n: u32) -> Self {
        self.query.page_length = Some(n);
        self
    }
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.query.last_loaded_id = Some(cursor.into());
        self
    }
}

impl Action for ListUsers {
    type Output = UsersPage;
    const NAME: &'static str = "list_users";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn path(&self) -> String {
        "/users/list".into()
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let q = &self.query;
        let mut out = Vec::new();
        if let Some(v) = &q.last_loaded_id {
            out.push(("lastLoadedId", v.clone()));
        }
        if let Some(v) = q.page_length {
            out.push(("pageLength", v.to_string()));
        }
        if let Some(v) = &q.offer_id {
            out.push(("offerId", v.clone()));
        }
        if let Some(v) = &q.course_id {
            out.push(("courseId", v.clone()));
        }
        if let Some(v) = q.active {
            out.push(("active", v.to_string()));
        }
        out
    }
}

/// `GET /users/find-by-mail/{email}`.
#[derive(Debug, Clone, PartialEq)]
pub struct FindUserByEmail {
    pub email: String,
}

impl FindUserByEmail {
    pub fn new(email: impl Into<String>) -> Self {
        Self {
            email: email.into(),
        }
    }
}

impl Action for FindUserByEmail {
    type Output = User;
    const NAME: &'static str = "find_user_by_email";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn path(&self) -> String {
        format!("/users/find-by-mail/{}", seg(&self.email))
    }
}

/// `POST /users/grant-user-offer-by-mail`: grants an offer, creating the
/// member if needed.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantUserOfferByEmail {
    pub body: GrantUserOfferBody,
}

impl GrantUserOfferByEmail {
    pub fn new(email: impl Into<String>, offer_id: impl Into<String>) -> Self {
        Self {
            body: GrantUserOfferBody {
                email: email.into(),
                grant_offer: offer_id.into(),
                firstname: None,
                name: None,
                order_id: None,
            },
        }
    }
    pub fn first_name(mut self, v: impl Into<String>) -> Self {
        self.body.firstname = Some(v.into());
        self
    }
    pub fn last_name(mut self, v: impl Into<String>) -> Self {
        self.body.name = Some(v.into());
        self
    }
    pub fn order_id(mut self, v: impl Into<String>) -> Self {
        self.body.order_id = Some(v.into());
        self
    }
}

impl Action for GrantUserOfferByEmail {
    type Output = UserUpdate;
    const NAME: &'static str = "grant_user_offer_by_email";
    const METHOD: Method = Method::POST;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        "/users/grant-user-offer-by-mail".into()
    }
    fn body(&self) -> Option<serde_json::Value> {
        to_body(&self.body)
    }
}

/// `POST /users/set-offer-state`.
#[derive(Debug, Clone, PartialEq)]
pub struct SetUserOfferState {
    pub body: SetOfferStateBody,
}

impl SetUserOfferState {
    /// `Some(false)` revokes (progress kept), `Some(true)` restores, `None`
    /// removes the holding and deletes its progress.
    pub fn new(
        email: impl Into<String>,
        offer_id: impl Into<String>,
        active: Option<bool>,
    ) -> Self {
        Self {
            body: SetOfferStateBody {
                email: email.into(),
                offer_id: offer_id.into(),
                active,
            },
        }
    }
}

impl Action for SetUserOfferState {
    type Output = UserUpdate;
    const NAME: &'static str = "set_user_offer_state";
    const METHOD: Method = Method::POST;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        "/users/set-offer-state".into()
    }
    fn body(&self) -> Option<serde_json::Value> {
        to_body(&self.body)
    }
}

/// `POST /users/set-order-state`: switches every holding granted under one order.
#[derive(Debug, Clone, PartialEq)]
pub struct SetOrderState {
    pub body: SetOrderStateBody,
}

impl SetOrderState {
    pub fn new(
        email: impl Into<String>,
        order_id: impl Into<String>,
        active: Option<bool>,
    ) -> Self {
        Self {
            body: SetOrderStateBody {
                email: email.into(),
                order_id: order_id.into(),
                active,
            },
        }
    }
}

impl Action for SetOrderState {
    type Output = UserUpdate;
    const NAME: &'static str = "set_order_state";
    const METHOD: Method = Method::POST;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        "/users/set-order-state".into()
    }
    fn body(&self) -> Option<serde_json::Value> {
        to_body(&self.body)
    }
}

/// `POST /users/set-offer-expires` (path inferred, see docs/api-shapes.md).
#[derive(Debug, Clone, PartialEq)]
pub struct SetOfferExpiration {
    pub body: SetOfferExpiresBody,
}

impl SetOfferExpiration {
    /// `expires_at: None` clears the expiration.
    pub fn new(
        email: impl Into<String>,
        offer_id: impl Into<String>,
        expires_at: Option<Timestamp>,
    ) -> Self {
        Self {
            body: SetOfferExpiresBody {
                email: email.into(),
                offer_id: offer_id.into(),
                expires_at,
            },
        }
    }
}

impl Action for SetOfferExpiration {
    type Output = UserUpdate;
    const NAME: &'static str = "set_offer_expiration";
    const METHOD: Method = Method::POST;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        "/users/set-offer-expires".into()
    }
    fn body(&self) -> Option<serde_json::Value> {
        to_body(&self.body)
    }
}

/// `DELETE /users/delete-users` with a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteUsers {
    pub body: DeleteUsersBody,
}

impl DeleteUsers {
    pub fn new<I, S>(emails: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            body: DeleteUsersBody {
                emails: emails.into_iter().map(Into::into).collect(),
            },
        }
    }
}

impl Action for DeleteUsers {
    type Output = DeleteUsersResult;
    const NAME: &'static str = "delete_users";
    const METHOD: Method = Method::DELETE;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        "/users/delete-users".into()
    }
    fn body(&self) -> Option<serde_json::Value> {
        to_body(&self.body)
    }
}

/// `POST /users/delete-users`: the same as [`DeleteUsers`] for clients that
/// cannot send a body with DELETE (path inferred).
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteUsersPost(pub DeleteUsers);

impl Action for DeleteUsersPost {
    type Output = DeleteUsersResult;
    const NAME: &'static str = "delete_users_post";
    const METHOD: Method = Method::POST;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;
    const TEXT_ANSWER: bool = true;

    fn path(&self) -> String {
        self.0.path()
    }
    fn body(&self) -> Option<serde_json::Value> {
        self.0.body()
    }
}

/// `GET /users/login-token/{uid}`: a one-hour passwordless login token.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateLoginToken {
    pub uid: String,
}

impl CreateLoginToken {
    pub fn new(uid: impl Into<String>) -> Self {
        Self { uid: uid.into() }
    }
}

impl Action for CreateLoginToken {
    type Output = LoginToken;
    const NAME: &'static str = "create_login_token";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::SafeToRepeat;

    fn path(&self) -> String {
        format!("/users/login-token/{}", seg(&self.uid))
    }
}

/// Answer of a write: the updated member when the API returns one, the new state
/// (`{active, email, offerId|orderId}`) when it answers with that, otherwise whatever it
/// sent (`{"ok": true, "message": "…"}` for a text answer; the shape is undocumented).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserUpdate {
    User(Box<User>),
    State(StateAnswer),
    Other(serde_json::Value),
}

impl UserUpdate {
    pub fn user(&self) -> Option<&User> {
        match self {
            UserUpdate::User(u) => Some(u),
            UserUpdate::State(_) | UserUpdate::Other(_) => None,
        }
    }
}
