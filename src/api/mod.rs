//! The local API: HTTP/JSON over a Unix socket, versioned paths (`/v1/...`),
//! one handler table, and authorization by the caller's peer credentials.
//! Documented in docs/api.md.

mod accept;
pub mod auth;
pub mod client;
pub mod error;
pub mod events;
pub mod limits;
pub mod server;
pub mod types;
pub mod users;

pub use accept::serve;
pub use client::{Client, ClientError};
pub use error::{ApiError, Code};
