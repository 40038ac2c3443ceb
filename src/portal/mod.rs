//! The agent's side of the portal protocol: wire types shared with
//! `licportal`, and the HTTPS client.

pub mod client;
pub mod stamp;
pub mod wire;

pub use client::{PortalClient, PortalError};
