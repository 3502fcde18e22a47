//! TLS for the connections to PostgreSQL (rustls, the same stack as every other outbound
//! connection).
//!
//! Whether TLS is used is the connection URL's `sslmode`: `disable` (plain TCP), `prefer`
//! (TLS when the server offers it; the default when the URL does not say) or `require`
//! (TLS or no connection). Whenever TLS is used the server's certificate is verified, chain
//! and host name: against the certificate authorities in `store.ca_file` when it is set,
//! else against the system's trust store. There is no mode that encrypts without
//! verifying, since that protects nothing from whoever sits in the middle.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use rustls_platform_verifier::BuilderVerifierExt;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `store.ca_file` could not be read or holds something that is not PEM.
    #[error("cannot read certificates from {path}: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// `store.ca_file` holds no certificate at all.
    #[error("{0} holds no PEM certificate")]
    NoCertificates(String),
    /// rustls refused the configuration (a certificate it cannot use, no system roots…).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS connector for every connection to PostgreSQL: trusting the certificate
/// authorities in `ca_file` when given, else the system's.
pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, TlsError> {
    // The provider is named rather than left to rustls's process default, which is
    // ambiguous (and a panic) once any dependency enables a second provider.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let config = match ca_file {
        Some(path) => builder.with_root_certificates(roots_from(path)?).with_no_client_auth(),
        None => builder.with_platform_verifier()?.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Every certificate in the PEM file at `path`, as trust anchors.
fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let shown = path.display().to_string();
    let ca_error = |message: String| TlsError::CaFile { path: shown.clone(), message };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))? {
        let cert = cert.map_err(|e| ca_error(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificates(shown));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let e = connector(Some(Path::new("/nonexistent/ca.pem"))).err().expect("an error");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = connector(Some(&path)).err().expect("an error");
        assert!(matches!(e, TlsError::NoCertificates(_)), "{e}");
    }

    #[test]
    fn the_system_trust_store_is_the_default() {
        assert!(connector(None).is_ok());
    }
}
