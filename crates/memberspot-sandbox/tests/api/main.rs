//! End-to-end tests: a real sandbox on 127.0.0.1:0 driven over HTTP with the
//! literal paths and JSON bodies of the API reference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod catalogue;
mod common;
mod guards;
mod persistence;
mod progress;
mod shapes;
mod users;
