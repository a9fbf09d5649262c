//! TLS termination with rustls and its aws-lc-rs provider: the public listener (ALPN offers
//! HTTP/2 and HTTP/1.1) and the admin listener (HTTP/1.1 only), from the same loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertFiles, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate file {}: {source}", .path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate file {} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot read TLS key file {}: {source}", .path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate and key do not form a usable pair: {0}")]
    Config(#[from] rustls::Error),
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

pub fn acceptor(config: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    server_acceptor(
        &config.cert_file,
        &config.key_file,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    )
}

/// The admin listener serves only HTTP/1.1: offering `h2` would have clients pick a protocol it
/// does not speak.
pub fn admin_acceptor(config: &CertFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    server_acceptor(
        &config.cert_file,
        &config.key_file,
        vec![b"http/1.1".to_vec()],
    )
}

/// The forward-auth listener speaks HTTP/1.1 and HTTP/2 (Envoy's gRPC `Check` needs the latter).
pub fn decision_acceptor(config: &CertFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    server_acceptor(
        &config.cert_file,
        &config.key_file,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    )
}

fn server_acceptor(
    cert_file: &Path,
    key_file: &Path,
    alpn: Vec<Vec<u8>>,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: key_file.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = alpn;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}
