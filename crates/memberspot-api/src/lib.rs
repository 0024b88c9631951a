//! Typed async client for the Memberspot REST API v1.
//!
//! Every endpoint is a value implementing [`Action`] (path parameters, query
//! and body, plus whether repeating it is safe); [`Client`] only executes
//! actions: it paces requests with a rate limiter shared by all clones,
//! retries what is safe to retry, and turns failures into [`ApiError`]s that
//! say what happened and what to do, without ever containing the API key.
//!
//! ```no_run
//! # async fn demo() -> Result<(), memberspot_api::ApiError> {
//! use memberspot_api::{actions::FindUserByEmail, ApiKey, Client};
//! let client = Client::builder("https://api.memberspot.de/v1")
//!     .api_key(ApiKey::new("secret"))
//!     .build()?;
//! let user = client.execute(&FindUserByEmail::new("anna@example.com")).await?;
//! println!("{}", user.uid);
//! # Ok(()) }
//! ```

pub mod actions;
mod client;
pub mod doctor;
mod error;
mod paginate;
mod probe;
pub mod progress;
mod ratelimit;
pub mod retry;
mod secret;

pub use actions::{Action, Base, Idempotency};
pub use client::{
    Client, ClientBuilder, ClientStats, DEFAULT_BASE_URL, RawAnswer, check_base_url, is_loopback,
};
pub use error::ApiError;
pub use memberspot_wire as wire;
pub use memberspot_wire::DEFAULT_RATE_LIMIT;
pub use paginate::{Page, Paged, cursor_stream, paged_stream, progress_stream, users_stream};
pub use probe::{BaseUrlError, ResolvedBase, resolve_base_url};
pub use retry::RetryPolicy;
pub use secret::ApiKey;
