//! Shared test harness: real servers on 127.0.0.1 ephemeral ports, a test CA, and the gateway
//! itself running in-process through the same `serve` entry the binary uses. `Rig` puts a
//! gateway on a `yaml` config in front of an upstream, trusting an issuer; `TestGateway` alone
//! takes any config text.
#![allow(dead_code, unused_imports)]

pub mod denials;
pub mod grpc;
pub mod keys;
pub mod process;
pub mod real_upstreams;
pub mod redis;
pub mod rig;
pub mod servers;
pub mod yaml;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jwt_gateway::{config, Gateway, GatewayOptions, Listeners};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer as CertIssuer, KeyPair};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use denials::{expect_denied, Want};
pub use keys::{claims, mint_raw, now, SigningKey};
pub use rig::{Backends, Rig};
pub use servers::{Issuer, Seen, Upstream};

/// A throwaway CA and a server certificate for `localhost`, `127.0.0.1` and `api.example.com`.
pub struct Pki {
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = CertIssuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "api.example.com".to_string(),
        ];
        let leaf = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        Pki {
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            cert_pem: format!("{}{}", leaf.pem(), ca_cert.pem()),
            key_pem: leaf_key.serialize_pem(),
        }
    }
}

/// The gateway under test, serving on 127.0.0.1 with a private temp folder holding its config,
/// `gateway.crt`/`gateway.key` (signed by `pki`) for configs that enable TLS.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The forward-auth listener, when the config has one.
    pub decisions: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    pub tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway from YAML (a `yaml::Config` prints as one); `gateway.crt` and
    /// `gateway.key` beside it are the test certificate.
    pub async fn start(yaml: impl std::fmt::Display) -> TestGateway {
        let yaml = yaml.to_string();
        TestGateway::try_start(&yaml)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}\n{yaml}"))
    }

    pub async fn try_start(yaml: impl std::fmt::Display) -> Result<TestGateway, String> {
        let yaml = yaml.to_string();
        let pki = Pki::new();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("gateway.crt"), &pki.cert_pem).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("gateway.key"), &pki.key_pem).map_err(|e| e.to_string())?;
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, &yaml).map_err(|e| e.to_string())?;
        let config = config::load(&path).map_err(|e| e.to_string())?;
        let tls = config.server.tls.is_some();
        let options = GatewayOptions {
            extra_roots: vec![pki.ca_der.clone()],
        };
        let gateway = Gateway::new(config, options).map_err(|e| e.to_string())?;
        let public = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let admin = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let forward_auth = match gateway.snapshot().config.forward_auth.is_some() {
            true => Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            false => None,
        };
        let decisions = forward_auth
            .as_ref()
            .map(|l| l.local_addr().map_err(|e| e.to_string()))
            .transpose()?;
        let addr = public.local_addr().map_err(|e| e.to_string())?;
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel::<()>();
        let g = gateway.clone();
        let task = tokio::spawn(async move {
            jwt_gateway::serve(
                Listeners {
                    public,
                    admin,
                    forward_auth,
                },
                g,
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(5),
            )
            .await;
        });
        Ok(TestGateway {
            addr,
            admin: admin_addr,
            decisions,
            gateway,
            pki,
            dir,
            tls,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn base(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.addr.port()
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// An HTTP/1.1 client trusting the test CA; `api.example.com` resolves to the gateway.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().http1_only().build().expect("client")
    }

    /// An HTTP/2 client (ALPN over TLS, prior knowledge over plaintext).
    pub fn h2_client(&self) -> reqwest::Client {
        let b = self.client_builder();
        let b = if self.tls {
            b
        } else {
            b.http2_prior_knowledge()
        };
        b.build().expect("h2 client")
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_der(&self.pki.ca_der).expect("CA");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve("api.example.com", self.addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
    }

    /// GET `path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client().get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request to gateway")
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .expect("admin request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// Sends raw bytes over plaintext and returns what came back before close or `timeout`.
    pub fn raw(&self, request: &[u8], timeout: Duration) -> String {
        raw_exchange(self.addr, request, timeout)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one sample line (`name{labels}` exactly as rendered), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}
