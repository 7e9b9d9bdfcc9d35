//! Helpers shared by the integration tests (include with `mod common;`).
#![allow(dead_code)]

pub mod certs;
