//! The validation hot path, measured: uncached validation per algorithm next to the bare
//! aws-lc-rs signature check it cannot avoid (with the ratio printed), jsonwebtoken's `decode` for
//! reference, the cache hit, route matching with 10 and 1,000 routes, the whole in-process
//! decision pipeline, the cost a DPoP proof adds to it per algorithm, the metering itself, the
//! verified-cache key choice, and claim headers rendered per request against rendered once.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use jwt_gateway::auth::jwk::{parse_jwks, VerifyingKey};
use jwt_gateway::auth::token::{self, unix_now};
use jwt_gateway::auth::Algorithm;
use jwt_gateway::claims::{header_value, ClaimPath};
use jwt_gateway::config::{compile_str, ProviderConfig};
use jwt_gateway::demo::mint::{user_claims, SigningKey};
use jwt_gateway::proxy::pipeline::{
    judge, proxied_upstream, rewrite_request, ConnInfo, RequestCtx, RequestView,
};
use jwt_gateway::{Gateway, GatewayOptions};
use serde_json::{json, Value};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-bench-secret";

/// Polls a future that must complete without waiting (cache hits, in-memory stages).
fn ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the benchmarked path waited on I/O"),
    }
}

/// One algorithm's key (from the library's minter, which signs with aws-lc-rs directly), and the
/// bare aws-lc-rs verifier of its public key that the gateway's check is measured against.
struct Signer {
    alg: &'static str,
    key: SigningKey,
    raw: Option<ParsedPublicKey>,
}

fn signers() -> Vec<Signer> {
    let parsed = |key: &SigningKey, verifier: &'static dyn VerificationAlgorithm| {
        ParsedPublicKey::new(verifier, key.public_key()?).ok()
    };
    let signer =
        |alg, key: SigningKey, verifier: Option<&'static dyn VerificationAlgorithm>| Signer {
            alg,
            raw: verifier.and_then(|v| parsed(&key, v)),
            key,
        };
    let rsa = SigningKey::rsa("rsa");
    vec![
        signer(
            "RS256",
            rsa.clone(),
            Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        ),
        signer("PS256", rsa, Some(&signature::RSA_PSS_2048_8192_SHA256)),
        signer(
            "ES256",
            SigningKey::p256("ec"),
            Some(&signature::ECDSA_P256_SHA256_FIXED),
        ),
        signer(
            "EdDSA",
            SigningKey::ed25519("ed"),
            Some(&signature::ED25519),
        ),
        signer("HS256", SigningKey::hmac(SECRET), None),
    ]
}

fn claims() -> Value {
    let mut claims = user_claims(
        "https://idp.bench",
        Some("orders-api"),
        "alice",
        &["orders.read", "user"],
        "orders:read profile",
    );
    claims["jti"] = json!("bench-1");
    claims.as_object_mut().expect("object").remove("nbf");
    claims
}

/// A token of `s` with `kid` in its header, or none.
fn mint(s: &Signer, kid: Option<&str>) -> String {
    s.key.mint_with(s.alg, json!({ "kid": kid }), &claims())
}

fn provider(alg: &str) -> ProviderConfig {
    std::env::set_var(
        "JWT_GATEWAY_BENCH_SECRET",
        std::str::from_utf8(SECRET).expect("utf8"),
    );
    let secret = if alg.starts_with("HS") {
        "\n    shared_secret_env: JWT_GATEWAY_BENCH_SECRET"
    } else {
        "\n    jwks_url: https://idp.bench/jwks"
    };
    let yaml = format!(
        "server: {{insecure_plaintext: true}}\nproviders:\n  - name: p\n    issuer: https://idp.bench\n    algorithms: [{alg}]\n    audiences: [orders-api]{secret}\nroutes:\n  - name: r\n    match: {{path_prefix: /}}\n    upstream: http://127.0.0.1:1\n    auth: anonymous\n"
    );
    let config = compile_str(&yaml, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e:?}"));
    (*config.providers[0]).clone()
}

/// The gateway's full uncached check: strict decode, key choice, signature, provider claims.
fn validate(token_text: &str, key: &VerifyingKey, provider: &ProviderConfig) -> bool {
    let Ok(t) = token::decode(token_text) else {
        return false;
    };
    if !provider.algorithms.contains(&t.alg) || !key.verify(t.alg, t.signing_input, &t.signature) {
        return false;
    }
    token::check_claims(t, provider, unix_now()).is_ok()
}

fn raw_verify(token_text: &str, raw: &ParsedPublicKey) -> bool {
    let (input, sig) = token_text.rsplit_once('.').expect("token");
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("sig");
    raw.verify_sig(input.as_bytes(), &sig).is_ok()
}

/// Median of a few timed runs, per iteration; for the printed ratios.
fn time_per_iter(mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let n = 2000;
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_secs_f64() / n as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[3]
}

fn uncached_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncached_validation");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for s in signers() {
        let alg = Algorithm::parse(s.alg).expect("alg");
        let p = provider(s.alg);
        let key: VerifyingKey = if alg.is_hmac() {
            VerifyingKey::shared_secret(SECRET, &[alg]).expect("hmac key")
        } else {
            parse_jwks(
                json!({"keys": [s.key.jwk()]}).to_string().as_bytes(),
                &[alg],
            )
            .expect("jwks")
            .keys
            .remove(0)
        };
        let t = mint(&s, None);
        assert!(validate(&t, &key, &p), "{} token must validate", s.alg);
        group.bench_function(format!("{}/gateway", s.alg), |b| {
            b.iter(|| validate(black_box(&t), &key, &p))
        });
        if let Some(raw) = &s.raw {
            assert!(raw_verify(&t, raw));
            group.bench_function(format!("{}/raw_aws_lc_rs", s.alg), |b| {
                b.iter(|| raw_verify(black_box(&t), raw))
            });
            let ours = time_per_iter(|| {
                black_box(validate(&t, &key, &p));
            });
            let floor = time_per_iter(|| {
                black_box(raw_verify(&t, raw));
            });
            println!(
                "ratio {}: gateway validate / raw aws-lc-rs verify = {:.2}x ({:.1} µs vs {:.1} µs)",
                s.alg,
                ours / floor,
                ours * 1e6,
                floor * 1e6
            );
        }
        if s.alg == "RS256" {
            let jwk = s.key.jwk();
            let n = jwk["n"].as_str().expect("n");
            let e = jwk["e"].as_str().expect("e");
            let dk =
                jsonwebtoken::DecodingKey::from_rsa_components(n, e).expect("jsonwebtoken key");
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            v.set_audience(&["orders-api"]);
            v.set_issuer(&["https://idp.bench"]);
            assert!(jsonwebtoken::decode::<Value>(&t, &dk, &v).is_ok());
            group.bench_function("RS256/jsonwebtoken_decode", |b| {
                b.iter(|| jsonwebtoken::decode::<Value>(black_box(&t), &dk, &v).is_ok())
            });
            if let Some(raw) = &s.raw {
                let jwt = time_per_iter(|| {
                    black_box(jsonwebtoken::decode::<Value>(&t, &dk, &v).is_ok());
                });
                let floor = time_per_iter(|| {
                    black_box(raw_verify(&t, raw));
                });
                println!(
                    "ratio RS256: jsonwebtoken::decode / raw aws-lc-rs verify = {:.2}x",
                    jwt / floor
                );
            }
        }
    }
    group.finish();
}

fn gateway_yaml(routes: usize, jwks_url: &str) -> String {
    gateway_yaml_with_cache(routes, jwks_url, 100_000)
}

fn gateway_yaml_with_cache(routes: usize, jwks_url: &str, cache_entries: usize) -> String {
    let mut yaml = format!(
        "server: {{insecure_plaintext: true}}\nlog: {{level: error}}\ntoken_cache: {{max_entries: {cache_entries}}}\nproviders:\n  - name: p\n    issuer: https://idp.bench\n    algorithms: [ES256]\n    audiences: [orders-api]\n    jwks_url: {jwks_url}\n    allow_insecure_jwks_http: true\nroutes:\n"
    );
    for i in 0..routes.saturating_sub(1) {
        yaml.push_str(&format!("  - name: r{i}\n    match: {{path_prefix: /svc{i}, methods: [GET]}}\n    upstream: http://127.0.0.1:1\n    auth: anonymous\n"));
    }
    yaml.push_str(
        "  - name: api\n    match: {path_prefix: /api}\n    upstream: http://127.0.0.1:1\n    auth:\n      providers: [p]\n      require:\n        - claim: realm_access.roles\n          any_of: [orders.read]\n    forward:\n      claims:\n        sub: X-Auth-Subject\n        email: X-Auth-Email\n        realm_access.roles: X-Auth-Roles\n",
    );
    yaml
}

/// A gateway whose provider holds `signer`'s key (served once by a loopback JWKS server).
fn gateway_with_key(routes: usize, jwk: &Value) -> (Arc<Gateway>, tokio::runtime::Runtime) {
    gateway_with_key_and_cache(routes, jwk, 100_000)
}

fn gateway_with_key_and_cache(
    routes: usize,
    jwk: &Value,
    cache_entries: usize,
) -> (Arc<Gateway>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = serve_jwks(&rt, jwk);
    let yaml = gateway_yaml_with_cache(routes, &format!("http://{addr}/jwks"), cache_entries);
    (gateway_of(&rt, &yaml), rt)
}

/// A gateway of `yaml`, its first provider's keys fetched.
fn gateway_of(rt: &tokio::runtime::Runtime, yaml: &str) -> Arc<Gateway> {
    let config = compile_str(yaml, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway =
        rt.block_on(async { Gateway::new(config, GatewayOptions::default()).expect("gateway") });
    let providers = gateway.snapshot().providers.clone();
    rt.block_on(async { providers[0].refresh().await.expect("JWKS fetch") });
    gateway
}

/// A loopback JWKS server on `rt` answering every request with `jwk`.
fn serve_jwks(rt: &tokio::runtime::Runtime, jwk: &Value) -> SocketAddr {
    let body = json!({"keys": [jwk]}).to_string();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        addr
    })
}

fn cached_paths(c: &mut Criterion) {
    let es = signers()
        .into_iter()
        .find(|s| s.alg == "ES256")
        .expect("ES256");
    let mut jwk = es.key.jwk();
    jwk["alg"] = json!("ES256");
    let (gateway, _rt) = gateway_with_key(10, &jwk);
    let token = mint(&es, Some("ec"));
    let snapshot = gateway.snapshot();
    let providers = snapshot
        .routes
        .routes()
        .last()
        .expect("api route")
        .providers
        .clone();
    let _rt_guard = _rt.enter();
    // What production runs per request: read the credential from the header map, then verify.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let verify = |headers: &http::HeaderMap| {
        let credential = jwt_gateway::auth::bearer::credential(headers, 8192)
            .expect("well-formed")
            .expect("present");
        ready(jwt_gateway::auth::verify::verify_token(
            &credential,
            &providers,
            &gateway.cache,
        ))
    };
    let (first, _) = verify(&headers).expect("valid");
    drop(first);

    let mut group = c.benchmark_group("cache_hit");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("credential+verify_token", |b| {
        b.iter(|| verify(black_box(&headers)).is_ok())
    });
    group.bench_function("credential+verify_token+revocation_check", |b| {
        b.iter(|| {
            let (entry, _) = verify(black_box(&headers)).expect("hit");
            gateway.revocations.is_revoked(&entry.claims)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("pipeline");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let conn = ConnInfo {
        peer: "127.0.0.1:40000".parse().expect("addr"),
        tls: true,
        client_cert: None,
    };
    let request = |path: &str, token: Option<&str>| {
        let mut b = http::Request::builder()
            .uri(path)
            .header("host", "api.example.com")
            .header("user-agent", "bench");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(()).expect("request").into_parts().0
    };
    for (name, path, tok) in [
        ("anonymous_route", "/svc3/items/7", None),
        ("cached_token", "/api/orders/7", Some(token.as_str())),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut parts = request(path, tok);
                let mut ctx = RequestCtx::new(
                    gateway.snapshot(),
                    conn,
                    http::HeaderValue::from_static("bench-id"),
                    parts.method.clone(),
                );
                // What `handle` runs before forwarding: every stage, then the upstream head.
                let verdict =
                    ready(judge(&gateway, &mut ctx, RequestView::of(&parts))).expect("allowed");
                let snapshot = ctx.snapshot.clone();
                let route = &snapshot.routes.routes()[verdict.route];
                let destination = proxied_upstream(route, false, false).expect("an upstream");
                rewrite_request(&ctx, route, destination, verdict, &mut parts, false)
                    .expect("rewritten");
                parts
            })
        });
    }
    group.finish();

    // The miss path as the load benchmark drives it: the cache full, every insert evicting, each
    // request a token it has not seen (2,000 tokens through a cache of 100).
    let (evicting, _rt2) = gateway_with_key_and_cache(10, &jwk, 100);
    let fresh: Vec<String> = (0..2000)
        .map(|i| {
            let mut c = claims();
            c["jti"] = json!(format!("bench-{i}"));
            c["sub"] = json!(format!("user-{i}"));
            es.key.mint_with(es.alg, json!({ "kid": "ec" }), &c)
        })
        .collect();
    let mut group = c.benchmark_group("pipeline");
    group
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let mut next = 0usize;
    group.bench_function("new_token_evicting", |b| {
        b.iter(|| {
            next = (next + 1) % fresh.len();
            let parts = request("/api/orders/7", Some(fresh[next].as_str()));
            let mut ctx = RequestCtx::new(
                evicting.snapshot(),
                conn,
                http::HeaderValue::from_static("bench-id"),
                parts.method.clone(),
            );
            // A miss never waits here: the key is cached in the provider's key set.
            ready(judge(&evicting, &mut ctx, RequestView::of(&parts))).expect("allowed")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("metering");
    let route = &snapshot.routes.routes().last().expect("route").metrics;
    let validation = providers[0].metrics().validation_hit.clone();
    group.bench_function("per_request_metrics", |b| {
        b.iter(|| {
            route.count_response(black_box(200));
            route.duration.observe(black_box(0.000_8));
            route.upstream_duration.observe(black_box(0.000_5));
            route.allow();
            validation.observe(black_box(0.000_001));
        })
    });
    group.finish();
}

/// Proofs signed per algorithm before the clock starts, each with its own `jti`.
const PROOF_POOL: usize = 1000;

/// The CPU a valid DPoP proof adds to a cached-token request, per proof algorithm: the whole
/// in-process pipeline (`judge`, then the upstream head, as `pipeline/cached_token`) with
/// `Authorization: DPoP` and one proof, next to the same gateway taking an unbound token as
/// `Bearer`. The token (ES256) is a cache hit every time; what differs is the binding stage:
/// parse the proof, check its claims, thumbprint its `jwk`, verify its signature, `ath`, and the
/// memory replay cache. A proof is good once, so each pass of `PROOF_POOL` requests runs on a
/// fresh gateway (built, and the token cached, off the clock) whose replay cache has seen none.
fn dpop_proofs(c: &mut Criterion) {
    let es = signers()
        .into_iter()
        .find(|s| s.alg == "ES256")
        .expect("ES256");
    let mut jwk = es.key.jwk();
    jwk["alg"] = json!("ES256");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = serve_jwks(&rt, &jwk);
    let yaml = gateway_yaml(1, &format!("http://{addr}/jwks")).replace(
        "algorithms: [ES256]",
        "algorithms: [ES256, RS256, PS256, EdDSA]\n    dpop: {max_age: 10m, replay: memory}",
    );
    let _rt_guard = rt.enter();
    let conn = ConnInfo {
        peer: "127.0.0.1:40000".parse().expect("addr"),
        tls: true,
        client_cert: None,
    };
    let htu = "https://api.example.com/api/orders/7";
    let request = |authorization: &str, proof: Option<&str>| {
        let mut b = http::Request::builder()
            .uri("/api/orders/7")
            .header("host", "api.example.com")
            .header("user-agent", "bench")
            .header("authorization", authorization);
        if let Some(p) = proof {
            b = b.header("dpop", p);
        }
        b.body(()).expect("request").into_parts().0
    };
    // Every stage, then the upstream head (which drops the DPoP header), as `handle` runs them.
    let run = |gateway: &Gateway, parts: &mut http::request::Parts| {
        let mut ctx = RequestCtx::new(
            gateway.snapshot(),
            conn,
            http::HeaderValue::from_static("bench-id"),
            parts.method.clone(),
        );
        let verdict = ready(judge(gateway, &mut ctx, RequestView::of(parts))).expect("allowed");
        let snapshot = ctx.snapshot.clone();
        let route = &snapshot.routes.routes()[verdict.route];
        let destination = proxied_upstream(route, false, false).expect("an upstream");
        rewrite_request(&ctx, route, destination, verdict, parts, false).expect("rewritten");
    };
    // `iters` requests, PROOF_POOL to a fresh gateway; only the requests are timed.
    let timed = |iters: u64, token: &str, requests: &dyn Fn() -> Vec<http::request::Parts>| {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let gateway = gateway_of(&rt, &yaml);
            let warm = request(&format!("Bearer {token}"), None);
            let snapshot = gateway.snapshot();
            let providers = &snapshot.routes.routes()[0].providers;
            let credential = jwt_gateway::auth::bearer::credential(&warm.headers, 8192)
                .expect("well-formed")
                .expect("present");
            ready(jwt_gateway::auth::verify::verify_token(
                &credential,
                providers,
                &gateway.cache,
            ))
            .expect("valid");
            let mut pool = requests();
            pool.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            let start = Instant::now();
            for parts in &mut pool {
                run(&gateway, black_box(parts));
            }
            total += start.elapsed();
            left -= pool.len() as u64;
        }
        total
    };

    let mut group = c.benchmark_group("dpop");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let unbound = mint(&es, Some("ec"));
    let bearer = format!("Bearer {unbound}");
    group.bench_function("cached_token/bearer", |b| {
        b.iter_custom(|iters| {
            timed(iters, &unbound, &|| {
                (0..PROOF_POOL).map(|_| request(&bearer, None)).collect()
            })
        })
    });
    let rsa = SigningKey::rsa("proof-rsa");
    let keys = [
        ("ES256", SigningKey::p256("proof-ec")),
        ("RS256", rsa.clone()),
        ("PS256", rsa),
        ("EdDSA", SigningKey::ed25519("proof-ed")),
    ];
    for (alg, key) in keys {
        let public = key.jwk();
        let jkt = jwt_gateway::demo::mint::b64(
            jwt_gateway::auth::dpop::jwk_thumbprint(&public).expect("a public JWK"),
        );
        let mut claims = claims();
        claims["cnf"] = json!({ "jkt": jkt });
        let token = es.key.mint_with("ES256", json!({"kid": "ec"}), &claims);
        let ath = jwt_gateway::demo::mint::b64(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            token.as_bytes(),
        ));
        let authorization = format!("DPoP {token}");
        // Signed once (RSA signing costs far more than the check measured here), used once per
        // fresh gateway.
        let proofs: Vec<String> = (0..PROOF_POOL)
            .map(|i| {
                key.mint_with(
                    alg,
                    json!({"typ": "dpop+jwt", "kid": null, "jwk": public}),
                    &json!({"jti": format!("bench-{alg}-{i}"), "htm": "GET", "htu": htu,
                        "iat": unix_now() as u64, "ath": ath}),
                )
            })
            .collect();
        group.bench_function(format!("cached_token/dpop_{alg}"), |b| {
            b.iter_custom(|iters| {
                timed(iters, &token, &|| {
                    proofs
                        .iter()
                        .map(|p| request(&authorization, Some(p)))
                        .collect()
                })
            })
        });
    }
    group.finish();
}

fn route_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_matching");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "unused", "x": "", "y": ""});
    for n in [10usize, 1000] {
        let yaml = gateway_yaml(n, "http://127.0.0.1:1/jwks");
        let config =
            compile_str(&yaml, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e:?}"));
        let _ = &jwk;
        let gateway = Gateway::new(config, GatewayOptions::default()).expect("gateway");
        let snapshot = gateway.snapshot();
        let method = http::Method::GET;
        let last_svc = format!("/svc{}/items/7", n.saturating_sub(2));
        group.bench_function(format!("{n}_routes"), |b| {
            b.iter(|| {
                let a = snapshot.routes.match_route(
                    "api.example.com",
                    &method,
                    black_box("/api/orders/7"),
                );
                let z =
                    snapshot
                        .routes
                        .match_route("api.example.com", &method, black_box(&last_svc));
                let miss = snapshot.routes.match_route(
                    "api.example.com",
                    &method,
                    black_box("/nowhere/x"),
                );
                (a, z, miss)
            })
        });
    }
    group.finish();
}

/// The cache key choice: the token itself (compared whole on a hit) against its SHA-256 digest.
fn cache_key(c: &mut Criterion) {
    let es = signers()
        .into_iter()
        .find(|s| s.alg == "ES256")
        .expect("ES256");
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            let mut cl = claims();
            cl["jti"] = json!(format!("jti-{i}"));
            es.key.mint_with("ES256", json!({"typ": null}), &cl)
        })
        .collect();
    // The verified cache's own hasher (foldhash), for both keys.
    let by_token: moka::sync::Cache<Arc<str>, u64, foldhash::fast::RandomState> =
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .build_with_hasher(foldhash::fast::RandomState::default());
    let by_digest: moka::sync::Cache<[u8; 32], u64, foldhash::fast::RandomState> =
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .build_with_hasher(foldhash::fast::RandomState::default());
    let digest = |t: &str| -> [u8; 32] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    };
    for (i, t) in tokens.iter().enumerate() {
        by_token.insert(Arc::from(t.as_str()), i as u64);
        by_digest.insert(digest(t), i as u64);
    }
    println!(
        "cache key: token length {} bytes vs a 32-byte digest",
        tokens[0].len()
    );
    let mut group = c.benchmark_group("cache_key");
    let mut i = 0usize;
    group.bench_function("token_string", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            by_token.get(tokens[i].as_str())
        })
    });
    group.bench_function("sha256_digest", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            by_digest.get(&digest(&tokens[i]))
        })
    });
    group.finish();
}

/// Claim headers rendered per request (what the gateway does) against cloning values rendered
/// once and kept with the cached token: the saving, per request, that such a copy would buy.
fn claim_headers(c: &mut Criterion) {
    let claims = match claims() {
        Value::Object(map) => map,
        _ => unreachable!("claims() is an object"),
    };
    let paths: Vec<(http::HeaderName, ClaimPath)> = [
        ("x-auth-subject", "sub"),
        ("x-auth-email", "email"),
        ("x-auth-roles", "realm_access.roles"),
    ]
    .into_iter()
    .map(|(h, p)| {
        (
            http::HeaderName::from_static(h),
            ClaimPath::parse(p).expect("path"),
        )
    })
    .collect();
    let render = |headers: &mut http::HeaderMap| {
        for (name, path) in &paths {
            let value = path.lookup(&claims).expect("claim present");
            headers.insert(name.clone(), header_value(value).expect("renders"));
        }
    };
    let mut prerendered = http::HeaderMap::new();
    render(&mut prerendered);
    let prerendered: Vec<(http::HeaderName, http::HeaderValue)> = prerendered
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut group = c.benchmark_group("claim_headers");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("render_3_per_request", |b| {
        b.iter(|| {
            let mut headers = http::HeaderMap::with_capacity(8);
            render(&mut headers);
            headers
        })
    });
    group.bench_function("clone_3_prerendered", |b| {
        b.iter(|| {
            let mut headers = http::HeaderMap::with_capacity(8);
            for (name, value) in &prerendered {
                headers.insert(name.clone(), value.clone());
            }
            headers
        })
    });
    group.finish();
}

/// A gateway on `gateway_yaml(2, ..)` plus `tracing`, its background tasks (the span exporter,
/// whose collector refuses connections at once, so the queue drains) running on the runtime.
fn traced_gateway(tracing: &str) -> (Arc<Gateway>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let yaml = gateway_yaml(2, "http://127.0.0.1:1/jwks") + tracing;
    let config = compile_str(&yaml, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway =
        rt.block_on(async { Gateway::new(config, GatewayOptions::default()).expect("gateway") });
    let g = gateway.clone();
    rt.block_on(async move { g.start_background().await });
    (gateway, rt)
}

/// What the pipeline does for tracing per request: join or start the trace, time the two
/// children, set the upstream's `traceparent`, hand a sampled span to the exporter.
fn trace_one(gateway: &Gateway, incoming: &http::HeaderMap) -> http::HeaderMap {
    use jwt_gateway::trace::{EndedRequest, RequestTrace};
    let snapshot = gateway.snapshot();
    let mut trace = gateway.tracer.start(&snapshot.config.tracing, incoming);
    let since = RequestTrace::mark(&trace);
    if let Some(t) = &mut trace {
        t.authenticated(
            since,
            Some(jwt_gateway::auth::verify::CacheOutcome::Hit),
            jwt_gateway::denial::Reason::Ok,
        );
    }
    let since = RequestTrace::mark(&trace);
    if let Some(t) = &mut trace {
        t.upstream_answered(since, Ok(200));
    }
    let mut upstream = http::HeaderMap::new();
    if let Some(t) = &trace {
        t.propagate(&mut upstream);
        t.end(EndedRequest {
            method: &http::Method::GET,
            route: Some("api"),
            status: 200,
            request_id: &http::HeaderValue::from_static("bench-id"),
        });
    }
    upstream
}

/// The OpenTelemetry SDK doing the same: extract, a server span with two children, inject, a
/// parent-based ratio sampler and a batch processor whose exporter discards.
mod otel_sdk {
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::{
        Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{
        BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    };

    #[derive(Debug)]
    struct Discard;

    impl SpanExporter for Discard {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Ok(())
        }
    }

    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    struct HeadersMut<'a>(&'a mut http::HeaderMap);
    impl Injector for HeadersMut<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(k, v);
            }
        }
    }

    pub struct Sdk {
        pub provider: SdkTracerProvider,
        tracer: SdkTracer,
        propagator: TraceContextPropagator,
    }

    pub fn sdk(ratio: f64) -> Sdk {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_span_processor(BatchSpanProcessor::builder(Discard).build())
            .build();
        Sdk {
            tracer: provider.tracer("bench"),
            provider,
            propagator: TraceContextPropagator::new(),
        }
    }

    pub fn trace_one(sdk: &Sdk, incoming: &http::HeaderMap) -> http::HeaderMap {
        let parent = sdk.propagator.extract(&Headers(incoming));
        let span = sdk
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("route", "api"),
            ])
            .start_with_context(&sdk.tracer, &parent);
        let cx = Context::with_span(&parent, span);
        let mut auth = sdk
            .tracer
            .span_builder("authenticate")
            .with_attributes([KeyValue::new("cache", "hit"), KeyValue::new("reason", "ok")])
            .start_with_context(&sdk.tracer, &cx);
        auth.end();
        let mut upstream = sdk
            .tracer
            .span_builder("upstream")
            .with_kind(SpanKind::Client)
            .start_with_context(&sdk.tracer, &cx);
        upstream.set_attribute(KeyValue::new("http.response.status_code", 200));
        upstream.end();
        let mut out = http::HeaderMap::new();
        sdk.propagator
            .inject_context(&cx, &mut HeadersMut(&mut out));
        let span = cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", 200));
        span.end();
        out
    }
}

/// The per-request cost of tracing: off; on with an unsampled span (the default ratio's common
/// case); sampled. Each with and without a client `traceparent`, next to the OpenTelemetry SDK
/// doing the same, and the exporter's encoding per span (off the request path).
fn tracing_cost(c: &mut Criterion) {
    let (off, _rt_off) = traced_gateway("");
    let (unsampled, _rt_u) =
        traced_gateway("tracing: {otlp_endpoint: \"http://127.0.0.1:9\", sample_ratio: 0}\n");
    let (sampled, _rt_s) =
        traced_gateway("tracing: {otlp_endpoint: \"http://127.0.0.1:9\", sample_ratio: 1}\n");
    let none = http::HeaderMap::new();
    let mut with_parent = http::HeaderMap::new();
    with_parent.insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
    );
    let mut group = c.benchmark_group("tracing");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("off", |b| b.iter(|| trace_one(&off, black_box(&none))));
    group.bench_function("unsampled_new_trace", |b| {
        b.iter(|| trace_one(&unsampled, black_box(&none)))
    });
    group.bench_function("unsampled_client_parent", |b| {
        b.iter(|| trace_one(&unsampled, black_box(&with_parent)))
    });
    group.bench_function("sampled_new_trace", |b| {
        b.iter(|| trace_one(&sampled, black_box(&none)))
    });
    let sdk_unsampled = otel_sdk::sdk(0.0);
    let sdk_sampled = otel_sdk::sdk(1.0);
    group.bench_function("otel_sdk_unsampled_new_trace", |b| {
        b.iter(|| otel_sdk::trace_one(&sdk_unsampled, black_box(&none)))
    });
    group.bench_function("otel_sdk_unsampled_client_parent", |b| {
        b.iter(|| otel_sdk::trace_one(&sdk_unsampled, black_box(&with_parent)))
    });
    group.bench_function("otel_sdk_sampled_new_trace", |b| {
        b.iter(|| otel_sdk::trace_one(&sdk_sampled, black_box(&none)))
    });
    group.finish();
    let _ = sdk_unsampled.provider.shutdown();
    let _ = sdk_sampled.provider.shutdown();

    let span = || jwt_gateway::trace::FinishedSpan {
        trace_id: [7; 16],
        span_id: [8; 8],
        parent: Some([9; 8]),
        start_unix_nanos: 1,
        end_unix_nanos: 2,
        method: http::Method::GET,
        route: Some("api".into()),
        status: 200,
        request_id: http::HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
        authenticate: None,
        upstream: None,
    };
    let mut group = c.benchmark_group("trace_export");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("encode_512_request_spans", |b| {
        b.iter(|| jwt_gateway::trace::encode((0..512).map(|_| span())).len())
    });
    group.finish();
}

/// `forward.assertion` per request: signing each time (ES256) against the cached assertion the
/// gateway hands out for the first half of its ttl.
fn assertion_cost(c: &mut Criterion) {
    let es = signers()
        .into_iter()
        .find(|s| s.alg == "ES256")
        .expect("ES256");
    let mut jwk = es.key.jwk();
    jwk["alg"] = json!("ES256");
    let (gateway, rt) = gateway_with_key(2, &jwk);
    let _guard = rt.enter();
    let mut headers = http::HeaderMap::new();
    let token = mint(&es, Some("ec"));
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let snapshot = gateway.snapshot();
    let route = snapshot.routes.routes().last().expect("api route");
    let credential = jwt_gateway::auth::bearer::credential(&headers, 8192)
        .expect("well-formed")
        .expect("present");
    let (entry, _) = ready(jwt_gateway::auth::verify::verify_token(
        &credential,
        &route.providers,
        &gateway.cache,
    ))
    .expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    std::fs::write(dir.path().join("a.pem"), key.serialize_pem()).expect("write");
    let yaml = gateway_yaml(2, "http://127.0.0.1:1/jwks").replace(
        "    forward:\n",
        "    forward:\n      assertion: {ttl: 60s}\n",
    ) + "assertion: {issuer: https://gw.bench, signing_key_file: a.pem}\n";
    let config = compile_str(&yaml, dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
    let minter = jwt_gateway::assertion::Minter::new(&config).expect("minter");
    let api = config.routes.last().expect("api");
    let forward = api.assertion.as_ref().expect("assertion");
    let mut group = c.benchmark_group("assertion");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut n = 0usize;
    group.bench_function("es256_signed_per_request", |b| {
        b.iter(|| {
            // Another route index each time: never a cached one.
            n += 1;
            minter
                .assertion(n, api, forward, Some(&entry))
                .expect("signed")
        })
    });
    group.bench_function("cached_per_token_and_route", |b| {
        b.iter(|| {
            minter
                .assertion(0, api, forward, Some(&entry))
                .expect("signed")
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    uncached_validation,
    cached_paths,
    dpop_proofs,
    route_matching,
    cache_key,
    claim_headers,
    tracing_cost,
    assertion_cost
);
criterion_main!(benches);
