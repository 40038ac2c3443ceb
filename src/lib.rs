//! licagent: the on-device license agent for PBX appliances.
//!
//! The library holds every domain; `src/main.rs` only parses arguments and
//! hands over to [`cli::run`].

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod hwid;
pub mod license;
pub mod portal;
pub mod seats;
pub mod store;
pub mod time;
pub mod ui;
