//! TLS termination with rustls and its aws-lc-rs provider: the public listener (ALPN offers
//! HTTP/2 and HTTP/1.1, and asks for client certificates with `client_auth`) and the admin
//! listener (HTTP/1.1 only), from the same loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;

use crate::auth::binding::CertThumbprint;
use crate::config::{CertFiles, ClientAuth, ClientAuthMode, TlsConfig};

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
    #[error("cannot use the client CA file {}: {source}", .path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: ClientCaError,
    },
}

/// Why `client_auth.ca_file` gave no roots to verify client certificates against.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    #[error(transparent)]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("it holds no usable CA certificate")]
    NoRoots,
    #[error("the verifier cannot be built: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
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
    let clients = config
        .client_auth
        .as_ref()
        .map(client_verifier)
        .transpose()?;
    server_acceptor(
        &config.cert_file,
        &config.key_file,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        clients,
    )
}

/// Verifies client certificates against `ca_file` (webpki: chain, validity, the clientAuth key
/// usage); `optional` also admits a client that sends none, `required` fails its handshake.
fn client_verifier(auth: &ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let failed = |source: ClientCaError| TlsError::ClientCa {
        path: auth.ca_file.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&auth.ca_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failed(e.into()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(failed(ClientCaError::NoRoots));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match auth.mode {
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
        ClientAuthMode::Required => builder,
    };
    builder.build().map_err(|e| failed(e.into()))
}

/// The thumbprint of the certificate a client proved it holds in this handshake, if any; the
/// verifier already checked it chains to `client_auth.ca_file`.
pub fn client_thumbprint(connection: &rustls::ServerConnection) -> Option<CertThumbprint> {
    let leaf = connection.peer_certificates()?.first()?;
    Some(CertThumbprint::of_certificate(leaf.as_ref()))
}

/// The admin listener serves only HTTP/1.1: offering `h2` would have clients pick a protocol it
/// does not speak.
pub fn admin_acceptor(config: &CertFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    server_acceptor(
        &config.cert_file,
        &config.key_file,
        vec![b"http/1.1".to_vec()],
        None,
    )
}

/// The forward-auth listener speaks HTTP/1.1 and HTTP/2 (Envoy's gRPC `Check` needs the latter).
pub fn decision_acceptor(config: &CertFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    server_acceptor(
        &config.cert_file,
        &config.key_file,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        None,
    )
}

fn server_acceptor(
    cert_file: &Path,
    key_file: &Path,
    alpn: Vec<Vec<u8>>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: key_file.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(certs, key)?;
    server.alpn_protocols = alpn;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}
