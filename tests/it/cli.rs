//! The real binary: `check` (route table, every error with its YAML path, `--request` explain),
//! `run` exit codes, and draining in-flight requests on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::{free_port, GatewayProcess, BIN};
use crate::support::yaml::{anonymous, basic, protected, provider, server, Config};
use crate::support::{claims, Issuer, Pki, SigningKey, Upstream};

/// Runs the binary to completion off the async runtime (servers in this process keep serving).
async fn gateway_cmd(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("JWT_GATEWAY_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run jwt-gateway")
    })
    .await
    .expect("join")
}

fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_panic(out: &Output) {
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_the_repo_config_and_prints_the_route_table() {
    let repo_config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml");
    let out = gateway_cmd(&["check", "-c", repo_config]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for route in ["status", "orders-read", "orders-write"] {
        assert!(stdout.contains(route), "route {route} listed:\n{stdout}");
    }
    assert!(stdout.contains("api.example.com"), "{stdout}");
    assert!(stdout.contains("/orders"), "{stdout}");
    assert!(stdout.contains("anonymous"), "{stdout}");
    // In matching order.
    let pos = |s: &str| stdout.find(s).unwrap();
    assert!(pos("status") < pos("orders-read") && pos("orders-read") < pos("orders-write"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_error_with_its_yaml_path() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write_config(
        dir.path(),
        "broken.yaml",
        r#"
server:
  insecure_plaintext: true
  limits:
    max_body_byts: 10
    header_read_timeout: soon
routes:
  - name: one
    match: { path_prefix: orders }
    upstream: "http://127.0.0.1:9"
    auth: anonymous
  - name: two
    match: { path_prefix: /two, methodz: [GET] }
    upstream: "http://127.0.0.1:9"
  - name: three
    match: { path_prefix: /three }
    upstream: "ftp://127.0.0.1:9"
    auth: anonymous
"#,
    );
    let out = gateway_cmd(&["check", "-c", broken.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_no_panic(&out);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for path in [
        "routes[0].match.path_prefix: must start with '/'",
        "server.limits.max_body_byts: unknown key",
        "server.limits.header_read_timeout:",
        "routes[1].match.methodz: unknown key",
        "routes[1].auth: is required",
        "routes[2].upstream:",
    ] {
        assert!(all.contains(path), "missing {path:?} in:\n{all}");
    }

    // One problem per file: each still names its path, and exits 1.
    let cases = [
        (
            "top-level typo",
            "server: { insecure_plaintext: true }\nroutez: []\n",
            "routez: unknown key",
        ),
        (
            "provider without algorithms",
            "server: { insecure_plaintext: true }\nproviders:\n  - { name: p, issuer: \"https://i\", jwks_url: \"https://i/jwks\" }\nroutes:\n  - { name: r, match: { path_prefix: / }, upstream: \"http://127.0.0.1:9\", auth: { providers: [p] } }\n",
            "providers[0].algorithms",
        ),
        (
            "unknown provider on a route",
            "server: { insecure_plaintext: true }\nroutes:\n  - { name: r, match: { path_prefix: / }, upstream: \"http://127.0.0.1:9\", auth: { providers: [nope] } }\n",
            "routes[0].auth.providers[0]",
        ),
        (
            "neither tls nor insecure_plaintext",
            "routes:\n  - { name: r, match: { path_prefix: / }, upstream: \"http://127.0.0.1:9\", auth: anonymous }\n",
            "server.tls: is required",
        ),
        (
            "not YAML",
            "routes: [unclosed\n",
            "not valid YAML",
        ),
        (
            "empty file",
            "",
            "empty",
        ),
    ];
    for (what, yaml, expected) in cases {
        let path = write_config(dir.path(), "case.yaml", yaml);
        let out = gateway_cmd(&["check", "-c", path.to_str().unwrap()]).await;
        assert_no_panic(&out);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{what}: {all}");
        assert!(
            all.contains(expected),
            "{what}: missing {expected:?} in:\n{all}"
        );
    }

    let missing = dir.path().join("absent.yaml");
    for cmd in ["check", "run"] {
        let out = gateway_cmd(&[cmd, "-c", missing.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(1), "{cmd} on a missing file");
        assert_no_panic(&out);
        assert!(
            text(&out.stderr).contains("absent.yaml"),
            "{}",
            text(&out.stderr)
        );
    }
}

fn explain_yaml(issuer: &Issuer) -> String {
    Config::new()
        .provider(provider(issuer))
        .route(
            protected("orders", "/orders", "http://127.0.0.1:9")
                .host("api.example.com")
                .require_any("realm_access.roles", &["orders.read"])
                .forward("sub", "X-Auth-Subject"),
        )
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_tls_files_the_way_run_will() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let other = Pki::new();
    let write = |name: &str, body: &str| {
        std::fs::write(dir.path().join(name), body).unwrap();
    };
    write("good.crt", &pki.cert_pem);
    write("good.key", &pki.key_pem);
    write("other.key", &other.key_pem);
    write(
        "garbage.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    write("empty.crt", "");
    let public = |cert: &str, key: &str| {
        Config::new()
            .server(server().listen(0).tls_files(cert, key))
            .route(anonymous("r", "/", "http://127.0.0.1:9"))
            .yaml()
    };
    // The admin listener's pair is read by the same loader and reported under its own path.
    let admin = |cert: &str, key: &str| {
        Config::new()
            .server(server().listen(0))
            .admin(&format!("tls: {{ cert_file: {cert}, key_file: {key} }}"))
            .route(anonymous("r", "/", "http://127.0.0.1:9"))
            .yaml()
    };
    // (cert, key, exit code, text that must appear)
    let cases = [
        ("good.crt", "good.key", 0, "OK"),
        (
            "missing.crt",
            "good.key",
            0,
            "warning: server.tls.cert_file:",
        ),
        (
            "good.crt",
            "missing.key",
            0,
            "warning: server.tls.key_file:",
        ),
        ("garbage.crt", "good.key", 1, "server.tls.cert_file:"),
        ("empty.crt", "good.key", 1, "server.tls.cert_file:"),
        ("good.crt", "garbage.crt", 1, "server.tls.key_file:"),
        ("good.crt", "other.key", 1, "server.tls:"),
    ];
    for ((cert, key, code, expected), section) in cases
        .into_iter()
        .flat_map(|case| ["server.tls", "admin.tls"].map(|section| (case, section)))
    {
        let expected = expected.replace("server.tls", section);
        let config = match section {
            "admin.tls" => admin(cert, key),
            _ => public(cert, key),
        };
        let path = write_config(dir.path(), "tls.yaml", &config);
        let out = gateway_cmd(&["check", "-c", path.to_str().unwrap()]).await;
        assert_no_panic(&out);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{section} {cert} + {key}:\n{all}"
        );
        assert!(
            all.contains(&expected),
            "{section} {cert} + {key}: {expected:?} in\n{all}"
        );
        assert!(
            !all.contains("PRIVATE KEY"),
            "{cert} + {key}: key material printed:\n{all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_request_explains_the_decision_without_the_signature() {
    let key = SigningKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "gateway.yaml", &explain_yaml(&issuer));
    let config = config.to_str().unwrap();
    let request = "GET https://api.example.com/orders/7";
    let explain = |token: String| async move {
        let out = gateway_cmd(&[
            "check",
            "-c",
            config,
            "--request",
            request,
            "--token",
            &token,
        ])
        .await;
        assert_no_panic(&out);
        let signature = token.rsplit('.').next().unwrap().to_string();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !all.contains(&signature),
            "the signature was printed:\n{all}"
        );
        assert_eq!(out.status.code(), Some(0), "{all}");
        text(&out.stdout)
    };

    let allowed = explain(key.mint("ES256", &claims(&issuer.iss(), "orders-api"))).await;
    assert!(allowed.contains("[pass]"), "{allowed}");
    assert!(!allowed.contains("[FAIL]"), "{allowed}");
    assert!(allowed.contains("orders"), "{allowed}");
    assert!(
        allowed
            .to_ascii_lowercase()
            .contains("x-auth-subject: alice"),
        "{allowed}"
    );
    let verdict = allowed
        .lines()
        .find(|l| l.starts_with("result:"))
        .unwrap_or_default();
    assert!(
        verdict.contains("200") || verdict.contains("forwarded upstream"),
        "{allowed}"
    );

    let mut c = claims(&issuer.iss(), "orders-api");
    c["realm_access"] = serde_json::json!({"roles": ["user"]});
    let forbidden = explain(key.mint("ES256", &c)).await;
    assert!(forbidden.contains("[FAIL]"), "{forbidden}");
    assert!(forbidden.contains("result: 403"), "{forbidden}");

    let other_key = SigningKey::p256("k1");
    let bad_sig = explain(other_key.mint("ES256", &claims(&issuer.iss(), "orders-api"))).await;
    assert!(
        bad_sig.contains("[FAIL] authenticate: bad_signature"),
        "{bad_sig}"
    );
    assert!(bad_sig.contains("result: 401"), "{bad_sig}");

    let out = gateway_cmd(&[
        "check",
        "-c",
        config,
        "--request",
        "GET https://api.example.com/orders/7",
    ])
    .await;
    assert!(
        text(&out.stdout).contains("result: 401"),
        "{}",
        text(&out.stdout)
    );
}

/// The binary on `port` (admin on `admin`), logging warnings as text, every path to `upstream`.
fn run_config(port: u16, admin: u16, upstream: &str) -> Config {
    Config::new()
        .server(server().listen(port))
        .admin(&format!("listen: \"127.0.0.1:{admin}\""))
        .section("log: { level: warn, format: text }")
        .route(anonymous("all", "/", upstream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_a_port_in_use_exits_2_with_one_sentence() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "gateway.yaml",
        &run_config(port, free_port(), "http://127.0.0.1:9").yaml(),
    );
    let out = gateway_cmd(&["run", "-c", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_no_panic(&out);
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&port.to_string()), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| !l.contains(" WARN ")).count(),
        1,
        "one sentence, no dump: {stderr}"
    );
    drop(taken);

    // TLS files that cannot be read when the listener starts: a runtime failure too.
    let config = write_config(
        dir.path(),
        "tls.yaml",
        &run_config(free_port(), free_port(), "http://127.0.0.1:9")
            .edit_server(|s| s.tls_files("missing.crt", "missing.key"))
            .yaml(),
    );
    let out = gateway_cmd(&["run", "-c", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_no_panic(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("missing.crt"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut gateway = GatewayProcess::spawn(
        dir.path(),
        &run_config(port, admin, &upstream.url()).yaml(),
        &[],
    );
    gateway.wait_until_ok(admin, "/healthz").await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            let started = Instant::now();
            let r = client
                .get(format!("http://127.0.0.1:{port}/slow/2000"))
                .send()
                .await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            Ok::<_, reqwest::Error>((status, body, started.elapsed()))
        }
    });
    let probe = upstream.clone();
    assert!(
        crate::proxy::eventually(Duration::from_secs(5), || probe.requests() == 1).await,
        "the slow request reached the upstream"
    );
    let signalled = Instant::now();
    gateway.sigterm();

    // New connections are refused soon after the signal, while the slow one is still running.
    let mut refused = false;
    while signalled.elapsed() < Duration::from_millis(1500) {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "the listener still accepts after SIGTERM");
    assert!(!slow.is_finished(), "the slow request was cut short");

    let (status, body, took) = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    assert!(body.contains("/slow/2000"), "{body}");
    assert!(took >= Duration::from_millis(2000));

    let exit = gateway.exit_status().await;
    assert_eq!(exit.code(), Some(0), "{}", gateway.log());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", admin)).is_err());
    assert_eq!(upstream.requests(), 1);
}

/// With one CPU the binary runs tokio's current-thread scheduler instead of the work-stealing
/// one: the same binary, confined by `taskset`, must still fetch keys, validate, reload and drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_cpu_the_gateway_validates_reloads_and_drains() {
    let key = SigningKey::rsa("one-cpu");
    let issuer = Issuer::start(&[(&key, "RS256")]).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let config = basic(&issuer, &upstream)
        .edit_provider("test", |p| p.algorithms("RS256"))
        .server(server().listen(port))
        .admin(&format!("listen: \"127.0.0.1:{admin}\""))
        .section("log: { level: info, format: text }");
    let mut gateway = GatewayProcess::spawn_on_one_cpu(dir.path(), &config.yaml(), &[]);
    gateway.wait_until_ok(admin, "/readyz").await;
    assert!(
        gateway.log().contains("scheduler=CurrentThread workers=1"),
        "{}",
        gateway.log()
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = |path: &'static str, token: Option<String>| {
        let client = client.clone();
        async move {
            let mut request = client.get(format!("http://127.0.0.1:{port}{path}"));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            request.send().await.expect("answer").status().as_u16()
        }
    };
    let token = key.mint("RS256", &claims(&issuer.iss(), "orders-api"));
    assert_eq!(get("/api/orders", Some(token.clone())).await, 200);
    assert_eq!(get("/api/orders", Some(token)).await, 200, "from the cache");
    assert_eq!(get("/api/orders", None).await, 401);
    assert_eq!(
        upstream.requests(),
        2,
        "the refusal never reached the upstream"
    );
    assert_eq!(get("/extra/x", None).await, 404);

    let extra = config.route(anonymous("extra", "/extra", &upstream.url()));
    std::fs::write(dir.path().join("gateway.yaml"), extra.yaml()).unwrap();
    gateway.sighup();
    let mut reloaded = false;
    for _ in 0..100 {
        if get("/extra/x", None).await == 200 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the new route never appeared:\n{}", gateway.log());

    gateway.sigterm();
    let exit = gateway.exit_status().await;
    assert_eq!(exit.code(), Some(0), "{}", gateway.log());
}

/// `revoke add --token` (argument and stdin) and `revoke list` against a running binary, address
/// and admin token taken from the config: the token is verified by the gateway, its jti revoked
/// for its issuer; a refused token changes nothing; neither the CLI nor the gateway's log ever
/// prints the token; listing without the admin token fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_add_token_and_list_use_the_admin_token() {
    const SECRET: &str = "cli-admin-secret-0123456789abcdef";
    let key = SigningKey::p256("k1");
    let issuer = Issuer::start(&[(&key, "ES256")]).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let yaml = Config::new()
        .server(server().listen(port))
        .admin(&format!("listen: \"127.0.0.1:{admin}\""))
        .admin("token_env: CLI_TEST_ADMIN_TOKEN")
        .section("log: { level: debug, format: text }")
        .provider(provider(&issuer))
        .route(protected("api", "/api", &upstream.url()))
        .yaml();
    let gateway = GatewayProcess::spawn(dir.path(), &yaml, &[("CLI_TEST_ADMIN_TOKEN", SECRET)]);
    gateway.wait_until_ok(admin, "/healthz").await;
    let config = dir.path().join("gateway.yaml");
    let revoke = |args: &[&str], secret: Option<&str>, stdin: Option<String>| {
        let mut command = Command::new(BIN);
        command
            .arg("-c")
            .arg(&config)
            .arg("revoke")
            .args(args)
            .env_remove("JWT_GATEWAY_CONFIG")
            .env_remove("CLI_TEST_ADMIN_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(s) = secret {
            command.env("CLI_TEST_ADMIN_TOKEN", s);
        }
        let stdin = stdin.unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("run jwt-gateway revoke");
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
            child.wait_with_output().expect("revoke output")
        })
    };
    let client = reqwest::Client::new();
    let call = |token: String| {
        let request = client
            .get(format!("http://127.0.0.1:{port}/api/x"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let c = claims(&issuer.iss(), "orders-api");
    let token = key.mint("ES256", &c);
    let mut no_jti = claims(&issuer.iss(), "orders-api");
    no_jti.as_object_mut().unwrap().remove("jti");
    let no_jti = key.mint("ES256", &no_jti);
    assert_eq!(call(token.clone()).await, 200);

    // Refused: no jti (from stdin), and a forged token; nothing is stored, nothing echoed.
    let out = revoke(&["add", "--token", "-"], Some(SECRET), Some(no_jti.clone()))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("jti"), "{}", text(&out.stderr));
    let forged = SigningKey::p256("k1").mint("ES256", &c);
    let out = revoke(&["add", "--token", &forged], Some(SECRET), None)
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    for out_text in [text(&out.stderr), text(&out.stdout)] {
        assert!(!out_text.contains(&forged), "{out_text}");
    }
    let list = revoke(&["list"], Some(SECRET), None).await.unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(
        text(&list.stdout).trim(),
        "[]",
        "the refusals stored nothing"
    );

    // Accepted: the entry names the token's jti, exp and issuer, and the token is refused.
    let out = revoke(&["add", "--token", &token], Some(SECRET), None)
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["jti"], c["jti"]);
    assert_eq!(entry["exp"], c["exp"]);
    assert_eq!(entry["iss"], serde_json::json!(issuer.iss()));
    assert!(!text(&out.stdout).contains(&token));
    let seen = upstream.requests();
    assert_eq!(call(token.clone()).await, 401);
    assert_eq!(upstream.requests(), seen, "the upstream saw nothing");

    let list = revoke(&["list"], Some(SECRET), None).await.unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(text(&list.stdout).contains(c["jti"].as_str().unwrap()));
    // Without the variable the config does not load at all; name the admin URL and an unset one.
    let admin_url = format!("http://127.0.0.1:{admin}");
    let unlisted = revoke(
        &[
            "--admin",
            &admin_url,
            "--token-env",
            "CLI_TEST_UNSET",
            "list",
        ],
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(unlisted.status.code(), Some(2), "no admin token: 401");
    assert!(
        text(&unlisted.stderr).contains("401"),
        "{}",
        text(&unlisted.stderr)
    );
    assert!(!text(&unlisted.stdout).contains(c["jti"].as_str().unwrap()));

    // --iss scopes a subject revocation to one issuer.
    let iss = issuer.iss();
    let out = revoke(
        &["add", "--sub", "bob", "--not-before", "1000", "--iss", &iss],
        Some(SECRET),
        None,
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (entry["sub"].as_str(), entry["iss"].as_str()),
        (Some("bob"), Some(iss.as_str()))
    );

    let log = gateway.log();
    for secret in [&token, &forged, &no_jti] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log:\n{log}");
    }
}
