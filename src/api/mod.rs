//! The local API over a Unix socket: HTTP/JSON, versioned paths, peer-credential authorization.
