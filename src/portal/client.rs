//! The HTTPS client for the portal protocol: rustls with ring, the system's
//! roots plus an optional CA file, optional certificate pinning, timeouts,
//! and errors that say what went wrong in one sentence.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;

use super::wire::{
    self, ErrorBody, ErrorCode, LicenseResponse, SignedRevocation, SignedStamp, PROTOCOL_HEADER,
    PROTOCOL_VERSION, SIGNATURE_HEADER,
};
use crate::config;
use crate::license::SigningKey;

pub struct PortalClient {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("no portal is configured (set portal.url in the config), or activate offline with `licagent request-code`")]
    NotConfigured,
    #[error("the portal client cannot be set up: {0}")]
    Setup(String),
    #[error("the portal at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the portal's TLS certificate is not trusted ({detail}); check portal.ca_file and portal.pin_sha256")]
    Untrusted { detail: String },
    #[error("the portal did not answer within {0} seconds")]
    Timeout(u64),
    #[error("the portal refused: {message}")]
    Refused {
        code: ErrorCode,
        message: String,
        revocation: Option<SignedRevocation>,
        /// The portal's signed time and code, bound to the nonce (boxed:
        /// errors stay small).
        stamp: Option<Box<SignedStamp>>,
    },
    #[error("the portal's answer could not be understood: {0}")]
    Garbage(String),
}

impl PortalError {
    /// Whether trying again later may help (network, portal trouble), as
    /// opposed to an answer that will not change by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            PortalError::Unreachable { .. }
            | PortalError::Timeout(_)
            | PortalError::Garbage(_)
            | PortalError::Untrusted { .. } => true,
            PortalError::Refused { code, .. } => {
                matches!(
                    code,
                    ErrorCode::Internal | ErrorCode::Unknown | ErrorCode::StaleRequest
                )
            }
            PortalError::NotConfigured | PortalError::Setup(_) => false,
        }
    }
}

impl PortalClient {
    /// Builds the client from `[portal]`; `Ok(None)` when no URL is set.
    pub fn from_config(cfg: &config::Portal) -> Result<Option<PortalClient>, PortalError> {
        if cfg.url.is_empty() {
            return Ok(None);
        }
        // reqwest is built without a default provider: ring is the one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = tls_config(cfg)?;
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // Calls are minutes to days apart: a pooled connection would
            // only ever be a stale one.
            .pool_max_idle_per_host(0)
            .timeout(timeout)
            .connect_timeout(timeout)
            .https_only(!cfg.allow_http)
            .user_agent(concat!("licagent/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&cfg.url) {
            // A proxy from the environment must not capture loopback calls.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| PortalError::Setup(e.to_string()))?;
        Ok(Some(PortalClient {
            http,
            base: cfg.url.trim_end_matches('/').to_string(),
            timeout,
        }))
    }

    /// POSTs a JSON body, signed by `device` when given; returns the
    /// license and the portal's time stamp.
    pub async fn license<T: Serialize>(
        &self,
        path: &str,
        body: &T,
        device: Option<&SigningKey>,
    ) -> Result<LicenseResponse, PortalError> {
        let bytes = self.post(path, body, device).await?;
        serde_json::from_slice(&bytes)
            .map_err(|_| PortalError::Garbage("it is not a license response".into()))
    }

    /// POSTs and returns the body of a 2xx answer; errors otherwise.
    pub async fn post<T: Serialize>(
        &self,
        path: &str,
        body: &T,
        device: Option<&SigningKey>,
    ) -> Result<Vec<u8>, PortalError> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(body).map_err(|e| PortalError::Setup(e.to_string()))?;
        let mut req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string());
        if let Some(key) = device {
            req = req.header(SIGNATURE_HEADER, wire::sign_request(&body, key));
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify(&url, e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.classify(&url, e))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => Err(PortalError::Refused {
                code: e.error.code,
                message: e.error.message,
                revocation: e.revocation,
                stamp: e.stamp.map(Box::new),
            }),
            Err(_) => Err(PortalError::Garbage(format!(
                "HTTP {status} without a protocol error body"
            ))),
        }
    }

    fn classify(&self, url: &str, e: reqwest::Error) -> PortalError {
        if e.is_timeout() {
            return PortalError::Timeout(self.timeout.as_secs());
        }
        if let Some(tls) = find_tls_error(&e) {
            return PortalError::Untrusted { detail: tls };
        }
        if e.is_decode() || e.is_body() {
            return PortalError::Garbage(e.to_string());
        }
        PortalError::Unreachable {
            url: url.to_string(),
            detail: root_cause(&e),
        }
    }
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.") || rest.starts_with("[::1]")
}

/// A certificate problem anywhere in the error's chain. An `io::Error`
/// hides what it wraps from `source()` (it answers the inner error's source),
/// so the walk looks inside it by `get_ref()`; hyper nests two of them.
fn find_tls_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return certificate_problem(r);
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn certificate_problem(e: &rustls::Error) -> Option<String> {
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::General(_) => Some(e.to_string()),
        _ => None,
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn tls_config(cfg: &config::Portal) -> Result<rustls::ClientConfig, PortalError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots; a board without any still works with ca_file.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| {
                PortalError::Setup(format!(
                    "cannot read portal.ca_file {}: {e}",
                    path.display()
                ))
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                PortalError::Setup(format!("portal.ca_file {} is not PEM: {e}", path.display()))
            })?;
        if certs.is_empty() {
            return Err(PortalError::Setup(format!(
                "portal.ca_file {} holds no certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                PortalError::Setup(format!("portal.ca_file {}: {e}", path.display()))
            })?;
        }
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| PortalError::Setup(format!("no usable CA certificate: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if cfg.pin_sha256.is_empty() {
        webpki
    } else {
        Arc::new(Pinned {
            inner: webpki,
            pins: cfg
                .pin_sha256
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        })
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PortalError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// Chain validation as usual, and then one of the presented certificates
/// must be among the pins.
#[derive(Debug)]
struct Pinned {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    pins: Vec<String>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .any(|c| self.pins.contains(&sha256_hex(c.as_ref())));
        if pinned {
            Ok(ok)
        } else {
            Err(rustls::Error::General(
                "the certificate is not among portal.pin_sha256".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Lower-case hex SHA-256, the form of `portal.pin_sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback("https://127.0.0.1:8443/x"));
        assert!(is_loopback("https://localhost:1"));
        assert!(is_loopback("https://[::1]:1"));
        assert!(!is_loopback("https://portal.invalid"));
    }

    #[test]
    fn no_url_means_no_client_and_bad_ca_file_is_named() {
        let cfg = config::Portal::default();
        assert!(PortalClient::from_config(&cfg).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not pem").unwrap();
        let cfg = config::Portal {
            url: "https://127.0.0.1:1".into(),
            ca_file: Some(ca.clone()),
            ..config::Portal::default()
        };
        let err = PortalClient::from_config(&cfg).err().unwrap().to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(PortalError::Timeout(1).is_transient());
        let refused = |code| PortalError::Refused {
            code,
            message: String::new(),
            revocation: None,
            stamp: None,
        };
        assert!(refused(ErrorCode::Internal).is_transient());
        assert!(!refused(ErrorCode::UnknownKey).is_transient());
        assert!(!refused(ErrorCode::Revoked).is_transient());
    }
}
