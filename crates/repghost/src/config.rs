//! The stage tables and the configuration that covers the whole family live in the burn-free
//! `repghost-plan` crate, which derives every layer from them; re-exported here.

pub use repghost_plan::config::*;
