//! The catalogue of typed Memberspot tools.
//!
//! A tool is data: a name, a description written for a language model, an
//! input and output JSON Schema derived from Rust types, and annotations
//! (read-only, destructive, idempotent, open-world). One [`Catalogue`]
//! serves the CLI, MCP and REST alike; [`Catalogue::call`] is the single
//! dispatch entry point (tool name + JSON arguments -> JSON result).

pub mod bulk;
mod catalogue;
mod error;
pub mod inputs;
pub mod redact;
mod schema;
mod tool;
pub mod tools;

pub use catalogue::{Catalogue, ToolEntry};
pub use error::ToolError;
pub use schema::{ALLOWED_SCHEMA_KEYWORDS, input_schema_for, output_schema_for};
pub use tool::{Annotations, MemberKey, OfferScope, Tool, ToolClass, ToolDescriptor};
