//! The one client of the local API; every CLI command that needs the daemon
//! goes through it. Socket errors become sentences a person can act on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::error::{Code, ErrorBody};

/// Long enough for an activation that waits on the portal.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Client {
    socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the daemon is not running (no socket at {0}); start it with `systemctl start licagent`"
    )]
    NotRunning(PathBuf),
    #[error("access denied to {0}: join the socket's group or run as root")]
    SocketDenied(PathBuf),
    #[error("{0}")]
    Forbidden(String),
    /// The daemon refused the request; `status` and `code` tell how.
    #[error("{message}")]
    Refused {
        status: StatusCode,
        /// `None` when the answer carried no code (not a licagent daemon).
        code: Option<Code>,
        message: String,
        /// Bad rows of a refused bulk import.
        rows: Vec<crate::seats::RowError>,
    },
    #[error("the daemon did not answer within {} seconds", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("talking to the daemon at {path} failed: {detail}")]
    Protocol { path: PathBuf, detail: String },
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, Vec::new(), "application/json")
            .await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, body, content_type).await
    }

    /// Any method; every call goes through here and its timeout.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.call_inner(method, path, body, content_type),
        )
        .await
        .unwrap_or(Err(ClientError::Timeout))
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<T, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                std::io::ErrorKind::PermissionDenied => {
                    ClientError::SocketDenied(self.socket.clone())
                }
                _ => self.protocol(e),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "licagent")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.protocol(e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.protocol(e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| self.protocol(e));
        }
        let (code, message, rows) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (Some(b.error.code), b.error.message, b.error.rows),
            Err(_) => (None, format!("the daemon answered {status}"), Vec::new()),
        };
        if status == StatusCode::FORBIDDEN && code == Some(Code::AccessDenied) {
            return Err(ClientError::Forbidden(message));
        }
        Err(ClientError::Refused {
            status,
            code,
            message,
            rows,
        })
    }

    fn protocol(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            path: self.socket.clone(),
            detail: e.to_string(),
        }
    }
}
