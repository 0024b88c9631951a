//! Wire types of the Memberspot REST API v1.
//!
//! Shared by the typed client (`memberspot-api`) and the emulator
//! (`memberspot-sandbox`) so the two cannot drift apart. Every type
//! *serialises* the one canonical shape documented in `docs/api-shapes.md`
//! and *deserialises* every shape public material reports for it (aliases,
//! bare arrays vs envelopes, several timestamp encodings), keeping unknown
//! fields in an `extra` map. Optional fields that arrive in an unexpected
//! type decode as absent instead of failing the whole response.

mod lenient;
pub mod model;
pub mod requests;
pub mod responses;
pub mod shape;
mod timestamp;

pub use lenient::{OneOrMany, PostRef, Posts};
pub use model::*;
pub use requests::*;
pub use responses::*;
pub use timestamp::Timestamp;

/// Extra, unrecognised fields of an object, kept verbatim.
pub type Extra = serde_json::Map<String, serde_json::Value>;
