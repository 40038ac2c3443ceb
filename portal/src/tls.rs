//! The portal's TLS material: a test CA and a server certificate made at
//! `init` (or the admin's own, copied in), and the rustls server config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the test certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read the certificate chain {path}: {detail}")]
    Cert { path: PathBuf, detail: String },
    #[error("cannot read the private key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("the certificate and key do not work together: {0}")]
    Config(#[from] rustls::Error),
}

/// PEM texts made by [`generate`].
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test CA and a server certificate for `names` (DNS names or IP
/// addresses) signed by it. The CA's key is not kept: the CA exists only so
/// that clients can trust this one server without trusting a self-signed
/// leaf, and no second certificate is ever made from it.
pub fn generate(names: &[String]) -> Result<Generated, TlsError> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "licportal test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "licportal");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Generated {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads a chain and key and checks that rustls accepts them together.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            detail: "it holds no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    #[test]
    fn generated_material_makes_a_server_config() {
        install_provider();
        let dir = tempfile::tempdir().unwrap();
        let g = generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &g.cert_pem).unwrap();
        std::fs::write(&key, &g.key_pem).unwrap();
        assert!(server_config(&cert, &key).is_ok());
        assert!(g.ca_pem.contains("BEGIN CERTIFICATE"));
        assert_ne!(g.ca_pem, g.cert_pem);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        install_provider();
        let dir = tempfile::tempdir().unwrap();
        let a = generate(&["localhost".into()]).unwrap();
        let b = generate(&["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &a.cert_pem).unwrap();
        std::fs::write(&key, &b.key_pem).unwrap();
        assert!(matches!(
            server_config(&cert, &key),
            Err(TlsError::Config(_))
        ));
        std::fs::write(&cert, "no pem here").unwrap();
        assert!(matches!(
            server_config(&cert, &key),
            Err(TlsError::Cert { .. })
        ));
    }
}
