//! Sender-constrained tokens (contract section D): client certificates on the listener (RFC 8705)
//! and DPoP proofs (RFC 9449). Certificates, key pairs, proofs and the thumbprints tokens carry
//! come from `tests/fixtures/binding_client.py` (Python's `cryptography` and PyJWT), never from the
//! gateway's own code; only the access tokens are minted by the harness, as everywhere else.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::yaml::{basic, server};
use crate::support::{Rig, TestGateway};

/// Debian's interpreter, which has `python3-cryptography` and `python3-jwt` (tests/run.sh
/// installs them); a `python3` earlier on PATH may lack them.
const PYTHON: &str = "/usr/bin/python3";

/// The Python client, one per test: it keeps the key pairs it made, by id.
struct PyClient {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
}

/// A client certificate from the Python client: PEM files and the `x5t#S256` of its DER.
#[derive(Clone)]
struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
    x5t: String,
}

/// The clients' CA and three clients: `alice` and `bob` signed by it, `mallory` self-signed.
struct ClientPki {
    ca: PathBuf,
    alice: ClientCert,
    bob: ClientCert,
    mallory: ClientCert,
    /// Holds the files for the test's lifetime.
    _dir: tempfile::TempDir,
}

impl PyClient {
    fn start() -> PyClient {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/binding_client.py"
        );
        let mut child = Command::new(PYTHON)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("Debian's python3 with python3-cryptography and python3-jwt (tests/run.sh installs them)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        PyClient {
            child,
            io: Mutex::new((stdin, stdout)),
        }
    }

    fn call(&self, request: Value) -> Value {
        let mut io = self.io.lock().expect("python client");
        writeln!(io.0, "{request}").expect("write to the python client");
        io.0.flush().expect("flush");
        let mut line = String::new();
        io.1.read_line(&mut line)
            .expect("read from the python client");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("python client answered {line:?}: {e}"));
        if let Some(error) = answer.get("error") {
            panic!("python client failed on {request}: {error}");
        }
        answer
    }

    fn pki(&self) -> ClientPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = self.call(json!({"op": "pki", "dir": dir.path()}));
        let client = |i: usize| ClientCert {
            cert: PathBuf::from(p["clients"][i]["cert"].as_str().expect("cert")),
            key: PathBuf::from(p["clients"][i]["key"].as_str().expect("key")),
            x5t: p["clients"][i]["x5t"].as_str().expect("x5t").to_string(),
        };
        ClientPki {
            ca: PathBuf::from(p["ca"].as_str().expect("ca")),
            alice: client(0),
            bob: client(1),
            mallory: client(2),
            _dir: dir,
        }
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 client of `gw` (TLS) presenting `cert`, or no certificate.
fn tls_client(gw: &TestGateway, cert: Option<&ClientCert>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_der(&gw.pki.ca_der).expect("CA");
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .timeout(Duration::from_secs(20));
    if let Some(c) = cert {
        let mut pem = std::fs::read(&c.cert).expect("client cert");
        pem.extend(std::fs::read(&c.key).expect("client key"));
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    b.build().expect("client")
}

/// `GET /api/x` over `client` with `Authorization: <scheme> <token>` and the `DPoP` proofs.
async fn send(
    client: &reqwest::Client,
    gw: &TestGateway,
    scheme: &str,
    token: &str,
    proofs: &[&str],
) -> reqwest::Result<reqwest::Response> {
    let mut req = client
        .get(gw.url("/api/x"))
        .header("authorization", format!("{scheme} {token}"));
    for p in proofs {
        req = req.header("dpop", *p);
    }
    req.send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_required_fails_a_handshake_without_a_verified_certificate() {
    let py = PyClient::start();
    let pki = py.pki();
    let rig =
        Rig::start(|i, u| basic(i, u).server(server().client_auth("required", &pki.ca))).await;
    let token = rig.token();
    for (who, cert) in [
        ("no certificate", None),
        ("self-signed", Some(&pki.mallory)),
    ] {
        let result = send(&tls_client(&rig.gw, cert), &rig.gw, "Bearer", &token, &[]).await;
        assert!(result.is_err(), "{who}: {result:?}");
    }
    assert_eq!(rig.upstream.requests(), 0, "nothing reached the upstream");
    let ok = send(
        &tls_client(&rig.gw, Some(&pki.alice)),
        &rig.gw,
        "Bearer",
        &token,
        &[],
    )
    .await
    .expect("a certificate of the clients' CA");
    assert_eq!(ok.status(), 200);
    assert_eq!(rig.upstream.requests(), 1);
    // The thumbprint the gateway takes of a leaf is the one Python's hashlib took.
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(&pki.alice.cert).expect("PEM");
    let thumbprint = jwt_gateway::auth::binding::CertThumbprint::of_certificate(&der);
    assert!(thumbprint.matches(&pki.alice.x5t));
    assert!(!thumbprint.matches(&pki.bob.x5t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_optional_admits_clients_without_one_but_verifies_a_presented_one() {
    let py = PyClient::start();
    let pki = py.pki();
    let rig =
        Rig::start(|i, u| basic(i, u).server(server().client_auth("optional", &pki.ca))).await;
    let token = rig.token();
    for (who, cert) in [("no certificate", None), ("alice", Some(&pki.alice))] {
        let r = send(&tls_client(&rig.gw, cert), &rig.gw, "Bearer", &token, &[])
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(r.status(), 200, "{who}");
    }
    let before = rig.upstream.requests();
    let forged = send(
        &tls_client(&rig.gw, Some(&pki.mallory)),
        &rig.gw,
        "Bearer",
        &token,
        &[],
    )
    .await;
    assert!(
        forged.is_err(),
        "a certificate outside the CA fails the handshake: {forged:?}"
    );
    assert_eq!(rig.upstream.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_client_ca() {
    let py = PyClient::start();
    let pki = py.pki();
    let rig =
        Rig::start(|i, u| basic(i, u).server(server().client_auth("required", &pki.ca))).await;
    let alice = tls_client(&rig.gw, Some(&pki.alice));
    let public = rig.gw.url("/public/x");
    assert_eq!(
        alice.get(&public).send().await.expect("alice").status(),
        200
    );

    // Another CA in the same file: alice's certificate no longer chains to it.
    let other = py.pki();
    std::fs::copy(&other.ca, &pki.ca).expect("replace the CA file");
    let config = jwt_gateway::config::load(&rig.gw.config_path()).expect("config");
    rig.gw.gateway.reload(config).await.expect("reload");
    let fresh = tls_client(&rig.gw, Some(&pki.alice));
    assert!(
        fresh.get(&public).send().await.is_err(),
        "the old CA is gone"
    );
    let bob_of_other = tls_client(&rig.gw, Some(&other.bob));
    assert_eq!(
        bob_of_other
            .get(&public)
            .send()
            .await
            .expect("new CA")
            .status(),
        200
    );
}
