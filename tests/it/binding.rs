//! Sender-constrained tokens (contract section D): client certificates on the listener (RFC 8705)
//! and DPoP proofs (RFC 9449). Certificates, key pairs, proofs and the thumbprints tokens carry
//! come from `tests/fixtures/binding_client.py` (Python's `cryptography` and PyJWT), never from the
//! gateway's own code; only the access tokens are minted by the harness, as everywhere else.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::yaml::{basic, protected, provider, server, Config};
use crate::support::{expect_denied, metric, Rig, TestGateway, Want};

/// Debian's interpreter, which has `python3-cryptography` and `python3-jwt` (tests/run.sh
/// installs them); a `python3` earlier on PATH may lack them.
const PYTHON: &str = "/usr/bin/python3";

/// The Python client, one per test: it keeps the key pairs it made, by id.
pub(crate) struct PyClient {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
}

/// A key pair the Python client holds: its public JWK and RFC 7638 thumbprint as Python
/// computed them, and the JWK with its private members (for the proof that leaks one).
pub(crate) struct PyKey {
    id: u64,
    jwk: Value,
    pub(crate) jkt: String,
    private_jwk: Value,
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
    pub(crate) fn start() -> PyClient {
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

    pub(crate) fn key(&self, alg: &str) -> PyKey {
        let k = self.call(json!({"op": "key", "alg": alg}));
        PyKey {
            id: k["id"].as_u64().expect("id"),
            jwk: k["jwk"].clone(),
            jkt: k["jkt"].as_str().expect("jkt").to_string(),
            private_jwk: k["private_jwk"].clone(),
        }
    }

    /// A proof by `key` for `htm` `htu` and `token`, with `extra` merged into the request
    /// (`header`, `claims`, `iat`, `jti`, `signer`, `alg`, `raw`: see the script).
    pub(crate) fn proof(
        &self,
        key: &PyKey,
        htm: &str,
        htu: &str,
        token: &str,
        extra: Value,
    ) -> String {
        let mut request =
            json!({"op": "proof", "key": key.id, "htm": htm, "htu": htu, "token": token});
        if let (Some(r), Value::Object(more)) = (request.as_object_mut(), extra) {
            r.extend(more);
        }
        self.call(request)["proof"]
            .as_str()
            .expect("proof")
            .to_string()
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
    fn thumbprint(&self, jwk: Value) -> String {
        self.call(json!({"op": "thumbprint", "jwk": jwk}))["jkt"]
            .as_str()
            .expect("jkt")
            .to_string()
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

// ---------------------------------------------------------------------------------------------
// DPoP

/// The provider's allow-list in these tests, and the `algs` its challenge must name: the
/// asymmetric ones, in the gateway's fixed order.
const ALGORITHMS: &str = "ES256, EdDSA, RS256, PS256";
const CHALLENGE: &str = r#"DPoP error="invalid_dpop_proof", algs="RS256 PS256 ES256 EdDSA""#;

/// Provider `test` taking DPoP proofs (`replay`), route `api` (`require_binding` if given)
/// forwarding `sub`, `/public` anonymous.
fn dpop_config(
    issuer: &crate::support::Issuer,
    upstream: &crate::support::Upstream,
    replay: &str,
    require: Option<&str>,
) -> Config {
    let mut api = protected("api", "/api", &upstream.url()).forward("sub", "X-Auth-Subject");
    if let Some(r) = require {
        api = api.require_binding(r);
    }
    basic(issuer, upstream)
        .provider(
            provider(issuer)
                .algorithms(ALGORITHMS)
                .line(&format!("dpop: {{ max_age: 60s, replay: {replay} }}")),
        )
        .route(api)
}

/// A token of the rig's issuer bound to `cnf`.
pub(crate) fn bound_token(rig: &Rig, cnf: Value) -> String {
    let mut claims = rig.claims();
    claims["cnf"] = cnf;
    rig.mint(&claims)
}

fn now() -> i64 {
    crate::support::now() as i64
}

/// `GET path` on `gw` with `Authorization: DPoP <token>`, the `DPoP` headers and `Host`.
async fn dpop_get(
    gw: &TestGateway,
    path: &str,
    host: Option<&str>,
    token: &str,
    proofs: &[&str],
) -> reqwest::Response {
    let mut req = gw
        .client()
        .get(gw.url(path))
        .header("authorization", format!("DPoP {token}"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    for p in proofs {
        req = req.header("dpop", *p);
    }
    req.send().await.expect("request to gateway")
}

/// Asserts the refusal of a proof: 401 with the DPoP challenge naming the provider's algorithms,
/// the `invalid_dpop_proof` body, nothing upstream, one more `binding` denial.
async fn expect_proof_refused<F>(rig: &Rig, what: &str, send: F)
where
    F: Future<Output = reqwest::Response>,
{
    let series = r#"gateway_auth_decisions_total{decision="deny",reason="binding",route="api"}"#;
    let before_upstream = rig.upstream.requests();
    let before = metric(&rig.gw.metrics().await, series).unwrap_or(0.0);
    let response = send.await;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII").to_string());
    let body: Value =
        serde_json::from_str(&response.text().await.unwrap_or_default()).expect("JSON body");
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(challenge.as_deref(), Some(CHALLENGE), "{what}");
    assert_eq!(body["error"], "invalid_dpop_proof", "{what}");
    assert_eq!(
        rig.upstream.requests(),
        before_upstream,
        "{what}: reached the upstream"
    );
    let after = metric(&rig.gw.metrics().await, series).unwrap_or(0.0);
    assert_eq!(after, before + 1.0, "{what}: the binding reason is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_tokens_pass_with_a_proof_of_every_algorithm_and_the_proof_stays_here() {
    let py = PyClient::start();
    let rig = Rig::start(|i, u| dpop_config(i, u, "memory", None)).await;
    let htu = rig.gw.url("/api/x");
    for alg in ["ES256", "EdDSA", "RS256", "PS256"] {
        let key = py.key(alg);
        // The gateway's RFC 7638 thumbprint of the key is the one Python computed.
        let ours = jwt_gateway::auth::dpop::jwk_thumbprint(&key.jwk).expect("a public JWK");
        assert_eq!(crate::support::keys::b64(ours), key.jkt, "{alg}");
        let token = bound_token(&rig, json!({"jkt": key.jkt}));
        // Twice: the second request finds the token cached and still needs its own proof.
        for round in 0..2 {
            let proof = py.proof(&key, "GET", &htu, &token, json!({}));
            let r = dpop_get(&rig.gw, "/api/x", None, &token, &[&proof]).await;
            assert_eq!(
                r.status(),
                200,
                "{alg} #{round}: {}",
                r.text().await.unwrap_or_default()
            );
            let seen = rig.upstream.last().expect("forwarded");
            assert!(
                seen.headers.get("dpop").is_none(),
                "{alg}: the proof went upstream"
            );
            assert!(seen.headers.get("authorization").is_none(), "{alg}");
            assert_eq!(seen.headers["x-auth-subject"], "alice");
        }
    }
    let hits = metric(
        &rig.gw.metrics().await,
        r#"gateway_token_validation_duration_seconds_count{cache="hit",provider="test"}"#,
    );
    assert!(hits.is_some_and(|n| n >= 4.0), "cached tokens: {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proof_fault_is_refused_with_the_dpop_challenge() {
    let py = PyClient::start();
    let rig = Rig::start(|i, u| dpop_config(i, u, "memory", None)).await;
    let htu = rig.gw.url("/api/x");
    let key = py.key("ES256");
    let other = py.key("ES256");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    let p = |extra: Value| py.proof(&key, "GET", &htu, &token, extra);
    let port = rig.gw.addr.port();
    let faults: Vec<(&str, Vec<String>)> = vec![
        ("no DPoP header", vec![]),
        ("two DPoP headers", vec![p(json!({})), p(json!({}))]),
        ("not a JWS", vec!["not-a-proof".into()]),
        ("typ JWT", vec![p(json!({"header": {"typ": "JWT"}}))]),
        ("no typ", vec![p(json!({"header": {"typ": null}}))]),
        (
            "alg none",
            vec![p(json!({"header": {"alg": "none"}, "raw": true}))],
        ),
        (
            "alg HS256",
            vec![p(json!({"header": {"alg": "HS256"}, "alg": "ES256"}))],
        ),
        ("crit", vec![p(json!({"header": {"crit": ["htm"]}}))]),
        ("no jwk", vec![p(json!({"header": {"jwk": null}}))]),
        (
            "jwk with the private key",
            vec![p(json!({"header": {"jwk": key.private_jwk}}))],
        ),
        (
            "signed by another key",
            vec![p(json!({"signer": other.id}))],
        ),
        (
            "proof of another key",
            vec![py.proof(&other, "GET", &htu, &token, json!({}))],
        ),
        ("htm POST", vec![p(json!({"claims": {"htm": "POST"}}))]),
        (
            "htu another path",
            vec![p(json!({"claims": {"htu": rig.gw.url("/api/y")}}))],
        ),
        (
            "htu https",
            vec![p(
                json!({"claims": {"htu": format!("https://127.0.0.1:{port}/api/x")}}),
            )],
        ),
        (
            "htu another host",
            vec![p(
                json!({"claims": {"htu": format!("http://localhost:{port}/api/x")}}),
            )],
        ),
        (
            "htu another port",
            vec![p(json!({"claims": {"htu": "http://127.0.0.1:1/api/x"}}))],
        ),
        (
            "htu with a query",
            vec![p(json!({"claims": {"htu": format!("{htu}?a=1")}}))],
        ),
        (
            "htu with a fragment",
            vec![p(json!({"claims": {"htu": format!("{htu}#f")}}))],
        ),
        ("no htu", vec![p(json!({"claims": {"htu": null}}))]),
        (
            "iat past max_age and skew",
            vec![p(json!({"iat": now() - 60 - 30 - 5}))],
        ),
        ("iat in the future", vec![p(json!({"iat": now() + 30 + 5}))]),
        ("no iat", vec![p(json!({"claims": {"iat": null}}))]),
        ("no ath", vec![p(json!({"claims": {"ath": null}}))]),
        (
            "ath of another token",
            vec![py.proof(&key, "GET", &htu, &rig.token(), json!({}))],
        ),
        ("no jti", vec![p(json!({"claims": {"jti": null}}))]),
    ];
    for (what, proofs) in &faults {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        expect_proof_refused(
            &rig,
            what,
            dpop_get(&rig.gw, "/api/x", None, &token, &proofs),
        )
        .await;
    }
    // Within the window the ages at the edges pass: proofs from max_age ago (less a margin
    // for this test's own run time) and from as far ahead as the clock skew.
    for (what, iat) in [("old", now() - 60 - 30 + 5), ("ahead", now() + 30 - 5)] {
        let proof = p(json!({"iat": iat}));
        let r = dpop_get(&rig.gw, "/api/x", None, &token, &[&proof]).await;
        assert_eq!(r.status(), 200, "{what} iat");
    }
    // A proof is good once.
    let proof = p(json!({}));
    let first = dpop_get(&rig.gw, "/api/x", None, &token, &[&proof]).await;
    assert_eq!(first.status(), 200);
    expect_proof_refused(
        &rig,
        "replayed",
        dpop_get(&rig.gw, "/api/x", None, &token, &[&proof]),
    )
    .await;
    // Another algorithm's key than the provider allows (ES384), though the token is bound to it.
    let es384 = py.key("ES384");
    let token384 = bound_token(&rig, json!({"jkt": es384.jkt}));
    let proof = py.proof(&es384, "GET", &htu, &token384, json!({}));
    expect_proof_refused(
        &rig,
        "alg ES384",
        dpop_get(&rig.gw, "/api/x", None, &token384, &[&proof]),
    )
    .await;
    // A token with no cnf.jkt under the DPoP scheme: no proof can match it.
    let unbound = rig.token();
    let proof = py.proof(&key, "GET", &htu, &unbound, json!({}));
    expect_proof_refused(
        &rig,
        "unbound token",
        dpop_get(&rig.gw, "/api/x", None, &unbound, &[&proof]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_replayed_proof_on_a_cached_token_is_refused() {
    let py = PyClient::start();
    let rig = Rig::start(|i, u| dpop_config(i, u, "memory", None)).await;
    let htu = rig.gw.url("/api/x");
    let key = py.key("EdDSA");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    let fresh = py.proof(&key, "GET", &htu, &token, json!({}));
    assert_eq!(
        dpop_get(&rig.gw, "/api/x", None, &token, &[&fresh])
            .await
            .status(),
        200
    );
    let hits = || async {
        let text = rig.gw.metrics().await;
        metric(
            &text,
            r#"gateway_token_validation_duration_seconds_count{cache="hit",provider="test"}"#,
        )
        .unwrap_or(0.0)
    };
    let before = hits().await;
    let stale = py.proof(&key, "GET", &htu, &token, json!({"iat": now() - 120}));
    expect_proof_refused(
        &rig,
        "stale proof, cached token",
        dpop_get(&rig.gw, "/api/x", None, &token, &[&stale]),
    )
    .await;
    expect_proof_refused(
        &rig,
        "replayed proof, cached token",
        dpop_get(&rig.gw, "/api/x", None, &token, &[&fresh]),
    )
    .await;
    assert!(
        hits().await >= before + 2.0,
        "the token was a cache hit both times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_bound_tokens_as_bearer_and_unbound_tokens_on_binding_routes_are_refused() {
    let py = PyClient::start();
    let rig = Rig::start(|i, u| dpop_config(i, u, "memory", Some("dpop"))).await;
    let htu = rig.gw.url("/api/x");
    let key = py.key("ES256");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    let proof = py.proof(&key, "GET", &htu, &token, json!({}));
    let with_proof = rig
        .client()
        .get(&htu)
        .bearer_auth(&token)
        .header("dpop", &proof)
        .send();
    let bearer = |t: &str| rig.client().get(&htu).bearer_auth(t).send();
    let gw = &rig.gw;
    let want = Want::Invalid("binding");
    let sent = |f: reqwest::RequestBuilder| async move { f.send().await.expect("sent") };
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        want,
        "jkt token as Bearer",
        async { bearer(&token).await.expect("sent") },
    )
    .await;
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        want,
        "jkt token as Bearer, with a proof",
        async { with_proof.await.expect("sent") },
    )
    .await;
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        want,
        "unbound token, require_binding: dpop",
        async { bearer(&rig.token()).await.expect("sent") },
    )
    .await;
    let x5t_only = bound_token(
        &rig,
        json!({"x5t#S256": "aUZ6A8Bx-LMcBEml4KgV5qR7tr2Gdr_w96vsyc0qPAE"}),
    );
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        want,
        "certificate-bound token, no certificate",
        async { bearer(&x5t_only).await.expect("sent") },
    )
    .await;
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        want,
        "cnf not an object",
        sent(
            rig.client()
                .get(&htu)
                .bearer_auth(bound_token(&rig, json!("jkt"))),
        ),
    )
    .await;
    // RFC 7800's other methods bind the token too; the gateway cannot check them.
    expect_denied(
        gw,
        &rig.upstream,
        "api",
        want,
        "cnf.kid: a confirmation method the gateway cannot check",
        sent(
            rig.client()
                .get(&htu)
                .bearer_auth(bound_token(&rig, json!({"kid": "client-key-1"}))),
        ),
    )
    .await;
    // The proof itself still works, with the DPoP scheme.
    let r = dpop_get(gw, "/api/x", None, &token, &[&proof]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dpop_header_never_reaches_an_upstream() {
    let py = PyClient::start();
    let rig = Rig::start(|i, u| {
        dpop_config(i, u, "memory", None).edit_server(|s| s.line("headers_with_underscores: allow"))
    })
    .await;
    let before = rig.upstream.requests();
    let r = rig
        .client()
        .get(rig.gw.url("/public/x"))
        .header("dpop", "eyJhbGciOiJFUzI1NiJ9.e30.c2ln")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(rig.upstream.requests(), before + 1);
    assert!(
        rig.upstream
            .last()
            .expect("seen")
            .headers
            .get("dpop")
            .is_none(),
        "anonymous route"
    );
    let seen = rig
        .allowed(
            "/api/x",
            &rig.token(),
            "a bearer token with a stray DPoP header",
        )
        .await;
    assert!(seen.headers.get("dpop").is_none());
    let _ = py;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htu_takes_the_forwarded_scheme_and_host_only_from_trusted_proxies() {
    let py = PyClient::start();
    let key = py.key("ES256");
    for trusted in [true, false] {
        let rig = Rig::start(|i, u| {
            let c = dpop_config(i, u, "memory", None);
            match trusted {
                true => c.edit_server(|s| s.line("trusted_proxies: [\"127.0.0.1\"]")),
                false => c,
            }
        })
        .await;
        let token = bound_token(&rig, json!({"jkt": key.jkt}));
        let send = |htu: &str| {
            let proof = py.proof(&key, "GET", htu, &token, json!({}));
            let req = rig
                .client()
                .get(rig.gw.url("/api/x"))
                .header("host", "internal.example")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "API.example.com")
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof);
            async move { req.send().await.expect("sent") }
        };
        let client_view = "https://api.example.com/api/x";
        let gateway_view = "http://internal.example/api/x";
        let (good, bad) = if trusted {
            (client_view, gateway_view)
        } else {
            (gateway_view, client_view)
        };
        assert_eq!(send(good).await.status(), 200, "trusted: {trusted}");
        expect_proof_refused(&rig, &format!("trusted: {trusted}, htu {bad}"), send(bad)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_accepted_by_one_instance_is_refused_by_another_sharing_redis() {
    let mut redis = RedisServer::start();
    let py = PyClient::start();
    let url = redis.url();
    let rig = Rig::start(|i, u| {
        dpop_config(i, u, "redis", None)
            .revocation("backend: redis")
            .revocation(&format!("redis_url: \"{url}\""))
    })
    .await;
    let second = rig.another().await;
    let key = py.key("ES256");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    // One URI for both instances: the client's `Host`, not their ports.
    let htu = "http://api.example.com/api/x";
    let host = Some("api.example.com");
    let proof = py.proof(&key, "GET", htu, &token, json!({}));
    assert_eq!(
        dpop_get(&rig.gw, "/api/x", host, &token, &[&proof])
            .await
            .status(),
        200
    );
    let before = rig.upstream.requests();
    let replayed = dpop_get(&second, "/api/x", host, &token, &[&proof]).await;
    assert_eq!(
        replayed.status(),
        401,
        "the other instance knows the proof at once"
    );
    assert_eq!(
        replayed.headers()["www-authenticate"]
            .to_str()
            .expect("ASCII"),
        CHALLENGE
    );
    assert_eq!(rig.upstream.requests(), before);
    let next = py.proof(&key, "GET", htu, &token, json!({}));
    assert_eq!(
        dpop_get(&second, "/api/x", host, &token, &[&next])
            .await
            .status(),
        200
    );

    // While Redis is down no proof is taken unchecked: 503, with Retry-After.
    redis.kill();
    let during = py.proof(&key, "GET", htu, &token, json!({}));
    let before = rig.upstream.requests();
    let r = dpop_get(&rig.gw, "/api/x", host, &token, &[&during]).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.headers().get("www-authenticate").is_none());
    assert_eq!(rig.upstream.requests(), before);
    let deny = r#"gateway_auth_decisions_total{decision="deny",reason="binding",route="api"}"#;
    assert!(metric(&rig.gw.metrics().await, deny).is_some_and(|n| n >= 1.0));
    // Tokens that are not bound do not need Redis.
    assert_eq!(rig.status(&rig.token()).await, 200);

    redis.restart();
    let mut status = 0;
    for _ in 0..50 {
        let again = py.proof(&key, "GET", htu, &token, json!({}));
        status = dpop_get(&rig.gw, "/api/x", host, &token, &[&again])
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "proofs are taken again once Redis is back");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bound_tokens_need_the_matching_certificate() {
    let py = PyClient::start();
    let pki = py.pki();
    let rig = Rig::start(|i, u| {
        dpop_config(i, u, "memory", None)
            .server(server().client_auth("optional", &pki.ca))
            .route(protected("strict", "/strict", &u.url()).require_binding("mtls"))
            .route(protected("either", "/either", &u.url()).require_binding("any"))
    })
    .await;
    let token = bound_token(&rig, json!({"x5t#S256": pki.alice.x5t}));
    let plain = rig.token();
    let get = |cert: Option<&ClientCert>, path: &str, token: &str| {
        let req = tls_client(&rig.gw, cert)
            .get(rig.gw.url(path))
            .bearer_auth(token);
        async move { req.send().await.expect("sent") }
    };
    assert_eq!(get(Some(&pki.alice), "/api/x", &token).await.status(), 200);
    assert_eq!(
        get(Some(&pki.alice), "/strict/x", &token).await.status(),
        200
    );
    assert_eq!(
        get(Some(&pki.alice), "/either/x", &token).await.status(),
        200
    );
    let want = Want::Invalid("binding");
    let (gw, up) = (&rig.gw, &rig.upstream);
    expect_denied(
        gw,
        up,
        "api",
        want,
        "another client's certificate",
        get(Some(&pki.bob), "/api/x", &token),
    )
    .await;
    expect_denied(
        gw,
        up,
        "api",
        want,
        "no certificate",
        get(None, "/api/x", &token),
    )
    .await;
    expect_denied(
        gw,
        up,
        "strict",
        want,
        "unbound token, mtls route",
        get(Some(&pki.alice), "/strict/x", &plain),
    )
    .await;
    expect_denied(
        gw,
        up,
        "either",
        want,
        "unbound token, any route",
        get(Some(&pki.alice), "/either/x", &plain),
    )
    .await;
    // An unbound token still passes where no binding is required, certificate or not.
    assert_eq!(get(Some(&pki.bob), "/api/x", &plain).await.status(), 200);
    // A DPoP-bound token satisfies `any` with its proof, but not `mtls`.
    let key = py.key("ES256");
    let dpop = bound_token(&rig, json!({"jkt": key.jkt}));
    let with_proof = |path: &str| {
        let htu = rig.gw.url(path);
        let proof = py.proof(&key, "GET", &htu, &dpop, json!({}));
        let req = tls_client(&rig.gw, Some(&pki.bob))
            .get(htu)
            .header("authorization", format!("DPoP {dpop}"))
            .header("dpop", proof);
        async move { req.send().await.expect("sent") }
    };
    assert_eq!(with_proof("/either/x").await.status(), 200);
    expect_denied(
        gw,
        up,
        "strict",
        want,
        "DPoP-bound token, mtls route",
        with_proof("/strict/x"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explainer_narrates_the_binding_stage_and_uses_up_no_proof() {
    use jwt_gateway::proxy::explain::explain_request;
    use jwt_gateway::proxy::pipeline::ConnInfo;
    let py = PyClient::start();
    let rig = Rig::start(|i, u| dpop_config(i, u, "memory", None)).await;
    let htu = rig.gw.url("/api/x");
    let key = py.key("ES256");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    let proof = py.proof(&key, "GET", &htu, &token, json!({}));
    let parts = |proof: &str| {
        http::Request::get("/api/x")
            .header("host", format!("127.0.0.1:{}", rig.gw.addr.port()))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .body(())
            .expect("request")
            .into_parts()
            .0
    };
    let conn = ConnInfo {
        peer: "127.0.0.1:40000".parse().expect("addr"),
        tls: false,
        client_cert: None,
    };
    let explained = explain_request(&rig.gw.gateway, conn, parts(&proof))
        .await
        .render();
    assert!(
        explained.contains("[pass] binding: DPoP proof matches the token (cnf.jkt)"),
        "{explained}"
    );
    assert!(
        !explained.contains(&proof) && !explained.contains(&token),
        "{explained}"
    );
    assert!(
        !explained.to_lowercase().contains("dpop: ey"),
        "no proof upstream: {explained}"
    );
    // Explaining used up nothing: the same proof still passes the proxy, once.
    let r = dpop_get(&rig.gw, "/api/x", None, &token, &[&proof]).await;
    assert_eq!(r.status(), 200);
    let again = explain_request(&rig.gw.gateway, conn, parts(&proof))
        .await
        .render();
    assert!(
        again.contains("[FAIL] DPoP proof: jti already used"),
        "{again}"
    );
    assert!(
        again.contains(&format!("WWW-Authenticate: {CHALLENGE}")),
        "{again}"
    );
    let wrong = py.proof(&key, "POST", &htu, &token, json!({}));
    let failed = explain_request(&rig.gw.gateway, conn, parts(&wrong))
        .await
        .render();
    assert!(
        failed.contains("[FAIL] DPoP proof: htm is not the request method"),
        "{failed}"
    );
}

/// The Python client's thumbprints are RFC 7638's: its own example key gives its own answer.
#[test]
fn the_python_client_computes_rfc_7638_thumbprints() {
    let py = PyClient::start();
    let jkt = py.thumbprint(json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }));
    assert_eq!(jkt, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

/// `jwt-gateway check --request ... --token T --header 'DPoP: P'`: the token goes as DPoP, the
/// binding stage is narrated, and neither token nor proof is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_request_takes_a_dpop_header() {
    let py = PyClient::start();
    let rig = Rig::start(|i, u| dpop_config(i, u, "memory", Some("dpop"))).await;
    let key = py.key("EdDSA");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    let htu = "https://api.example.com/api/x";
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, rig.config.yaml()).expect("config");
    let explain = |method: &'static str, proof: String| {
        let (config, token) = (config.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            let out = Command::new(crate::support::process::BIN)
                .arg("check")
                .arg("-c")
                .arg(&config)
                .args(["--request", &format!("{method} {htu}")])
                .args(["--token", &token])
                .args(["--header", &format!("DPoP: {proof}")])
                .output()
                .expect("the binary runs");
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !all.contains(&token) && !all.contains(&proof),
                "printed: {all}"
            );
            all
        })
    };
    let good = py.proof(&key, "GET", htu, &token, json!({}));
    let out = explain("GET", good).await.expect("explained");
    assert!(
        out.contains("[pass] binding: DPoP proof matches the token (cnf.jkt)"),
        "{out}"
    );
    assert!(!out.contains("[FAIL]"), "{out}");
    let wrong = py.proof(
        &key,
        "GET",
        "https://api.example.com/api/y",
        &token,
        json!({}),
    );
    let out = explain("GET", wrong).await.expect("explained");
    assert!(
        out.contains("[FAIL] DPoP proof: htu is not the request URI"),
        "{out}"
    );
    assert!(
        out.contains(&format!("WWW-Authenticate: {CHALLENGE}")),
        "{out}"
    );
}

/// The access log of the real binary: a replayed and a wrong proof are logged with reason
/// `binding`, and no part of a proof or the token appears anywhere in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_says_binding_and_never_shows_a_proof() {
    use crate::support::process::{free_port, GatewayProcess};
    let py = PyClient::start();
    let rig = Rig::start(|i, u| dpop_config(i, u, "memory", None)).await;
    let (port, admin) = (free_port(), free_port());
    let yaml = dpop_config(&rig.issuer, &rig.upstream, "memory", None)
        .server(server().listen(port))
        .admin(&format!("listen: \"127.0.0.1:{admin}\""))
        .section("log: { level: info, format: json }")
        .yaml();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut gateway = GatewayProcess::spawn(dir.path(), &yaml, &[]);
    gateway.wait_until_ok(admin, "/readyz").await;
    let key = py.key("ES256");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    let url = format!("http://127.0.0.1:{port}/api/x");
    let client = rig.client();
    let send = |proof: &str| {
        client
            .get(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
    };
    let good = py.proof(&key, "GET", &url, &token, json!({}));
    let bad = py.proof(&key, "POST", &url, &token, json!({}));
    let before = rig.upstream.requests();
    assert_eq!(send(&good).await.expect("sent").status(), 200);
    assert_eq!(send(&good).await.expect("sent").status(), 401, "replayed");
    assert_eq!(send(&bad).await.expect("sent").status(), 401, "htm");
    assert_eq!(rig.upstream.requests(), before + 1);
    gateway.sigterm();
    assert_eq!(gateway.exit_status().await.code(), Some(0));

    let log = gateway.log();
    let access: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "access")
        .collect();
    let reasons: Vec<(&Value, &Value)> = access
        .iter()
        .map(|l| (&l["status"], &l["reason"]))
        .collect();
    assert_eq!(
        reasons,
        [
            (&json!(200), &json!("ok")),
            (&json!(401), &json!("binding")),
            (&json!(401), &json!("binding")),
        ],
        "{log}"
    );
    for secret in [&good, &bad, &token] {
        for part in secret.split('.') {
            assert!(
                !log.contains(part),
                "the log shows a proof or token part:\n{log}"
            );
        }
    }
}

/// Tokens from a cookie or query parameter (`token_from`) are bearer tokens: a DPoP-bound one is
/// refused there (reason `binding`) even with a valid proof beside it, an unbound one passes, and
/// `require_binding` still refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_cookie_are_bearer_tokens_to_the_binding_stage() {
    let py = PyClient::start();
    let rig = Rig::start(|i, u| {
        dpop_config(i, u, "memory", None)
            .route(
                protected("jar", "/jar", &u.url())
                    .auth_line(r#"token_from: [header, "cookie:at"]"#),
            )
            .route(
                protected("strictjar", "/strictjar", &u.url())
                    .auth_line(r#"token_from: ["cookie:at"]"#)
                    .require_binding("dpop"),
            )
    })
    .await;
    let key = py.key("ES256");
    let bound = bound_token(&rig, json!({"jkt": key.jkt}));
    let htu = rig.gw.url("/jar/x");
    let proof = py.proof(&key, "GET", &htu, &bound, json!({}));
    let with_cookie = |path: &str, token: &str, proof: Option<&str>| {
        let mut req = rig
            .client()
            .get(rig.gw.url(path))
            .header("cookie", format!("at={token}"));
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        async move { req.send().await.expect("sent") }
    };
    let want = Want::Invalid("binding");
    let (gw, up) = (&rig.gw, &rig.upstream);
    expect_denied(
        gw,
        up,
        "jar",
        want,
        "jkt token from a cookie, with a valid proof",
        with_cookie("/jar/x", &bound, Some(&proof)),
    )
    .await;
    expect_denied(
        gw,
        up,
        "strictjar",
        want,
        "unbound token from a cookie, require_binding: dpop",
        with_cookie("/strictjar/x", &rig.token(), None),
    )
    .await;
    assert_eq!(
        with_cookie("/jar/x", &rig.token(), None).await.status(),
        200,
        "an unbound cookie token passes where no binding is required"
    );
    // The same bound token and proof under `Authorization: DPoP` pass on the same route.
    assert_eq!(
        dpop_get(gw, "/jar/x", None, &bound, &[&proof])
            .await
            .status(),
        200
    );
}

/// Forward-auth (Traefik's headers): the decision checks the proof against the URI the client
/// used, as the asking proxy names it, and uses it up; a certificate-bound token is refused, as
/// the client's TLS ends at the other proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_decisions_check_dpop_proofs_too() {
    let py = PyClient::start();
    let rig =
        Rig::start(|i, u| dpop_config(i, u, "memory", None).section("forward_auth: {}")).await;
    let decisions = rig.gw.decisions.expect("the decision listener");
    let key = py.key("EdDSA");
    let token = bound_token(&rig, json!({"jkt": key.jkt}));
    let decide = |token: &str, scheme: &str, proof: Option<&str>| {
        let mut req = rig
            .client()
            .get(format!("http://{decisions}/traefik"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", "/api/x?page=2")
            .header("authorization", format!("{scheme} {token}"));
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        async move { req.send().await.expect("decision") }
    };
    let proof = py.proof(
        &key,
        "GET",
        "https://api.example.com/api/x",
        &token,
        json!({}),
    );
    let ok = decide(&token, "DPoP", Some(&proof)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-auth-subject"], "alice");
    let again = decide(&token, "DPoP", Some(&proof)).await;
    assert_eq!(again.status(), 401, "replayed");
    assert_eq!(again.headers()["www-authenticate"], CHALLENGE);
    let wrong = py.proof(
        &key,
        "GET",
        "http://api.example.com/api/x",
        &token,
        json!({}),
    );
    let refused = decide(&token, "DPoP", Some(&wrong)).await;
    assert_eq!(refused.status(), 401, "the client's scheme was https");
    assert_eq!(refused.headers()["www-authenticate"], CHALLENGE);
    let x5t = bound_token(
        &rig,
        json!({"x5t#S256": "aUZ6A8Bx-LMcBEml4KgV5qR7tr2Gdr_w96vsyc0qPAE"}),
    );
    let refused = decide(&x5t, "Bearer", None).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"]
        .to_str()
        .expect("ASCII")
        .starts_with(r#"Bearer error="invalid_token""#));
    assert_eq!(rig.upstream.requests(), 0, "a decision forwards nothing");
}
