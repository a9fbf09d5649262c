//! Every classic JWT attack against the real gateway: each token is refused with the reason the
//! contract names, the upstream sees nothing, and nothing a token points at is ever fetched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::keys::{b64, Material};
use crate::support::yaml::{every_rule, secret_env};
use crate::support::{mint_raw, Issuer, Rig, SigningKey, Want};

/// A loopback listener that only counts connections: where an attacker's `jku`/`x5u` points.
struct Tripwire {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Tripwire {
    async fn start() -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Tripwire { addr, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A provider trusting a P-256 key (`ec1`, ES256; it signs the rig's tokens) and an RSA key
/// (`rsa1`, RS256).
async fn target() -> Rig {
    target_with("RS256, ES256", None).await
}

async fn target_with(algorithms: &str, provider_extra: Option<&str>) -> Rig {
    let keys = [
        (&SigningKey::p256("ec1"), "ES256"),
        (&SigningKey::rsa("rsa1"), "RS256"),
    ];
    Rig::with_keys(&keys, |i, u| {
        every_rule(i, u).edit_provider("test", |p| {
            let p = p.algorithms(algorithms);
            match provider_extra {
                Some(extra) => p.line(extra),
                None => p,
            }
        })
    })
    .await
}

/// The control: a well-formed token from the same keys passes.
async fn control(t: &Rig) {
    assert_eq!(t.status(&t.token()).await, 200, "control token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_in_every_spelling_is_refused() {
    let t = target().await;
    let payload = t.claims().to_string();
    let real_sig = {
        let ok = t.mint(&t.claims());
        ok.rsplit_once('.').expect("parts").1.to_string()
    };
    for alg in ["none", "None", "NONE", "nOnE", "none ", ""] {
        for header in [
            json!({"alg": alg, "typ": "JWT"}),
            json!({"alg": alg, "typ": "JWT", "kid": "ec1"}),
        ] {
            for sig in [String::new(), b64("sig"), real_sig.clone()] {
                let input = format!("{}.{}", b64(header.to_string()), b64(&payload));
                let token = format!("{input}.{sig}");
                t.denied(
                    Want::Invalid("alg_not_allowed"),
                    &format!(
                        "alg {alg:?} header {header} sig {:?}",
                        &sig[..sig.len().min(8)]
                    ),
                    &token,
                )
                .await;
            }
        }
    }
    // No `alg` at all, or one that is not a string: malformed, never a default.
    for header in [
        json!({"typ": "JWT", "kid": "ec1"}),
        json!({"alg": null, "kid": "ec1"}),
        json!({"alg": ["ES256"], "kid": "ec1"}),
        json!({"alg": 0, "kid": "ec1"}),
    ] {
        let token = mint_raw(&header.to_string(), &payload, |i| t.sign(i));
        t.denied(
            Want::Invalid("malformed"),
            &format!("header {header}"),
            &token,
        )
        .await;
    }
    control(&t).await;
}

/// PKCS#1 `RSAPublicKey` DER and its PEM: what a confused HS256 verifier would use as the secret.
fn rsa_public_forms(key: &SigningKey) -> Vec<(&'static str, Vec<u8>)> {
    assert!(matches!(key.material, Material::Rsa(_)), "an RSA key");
    let der = key.public_key().expect("RSA public key");
    let body: Vec<String> = STANDARD
        .encode(&der)
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        body.join("\n")
    );
    let jwk = key.jwk().to_string().into_bytes();
    let n = URL_SAFE_NO_PAD
        .decode(key.jwk()["n"].as_str().expect("n"))
        .expect("n bytes");
    vec![
        ("DER", der),
        ("PEM", pem.into_bytes()),
        ("JWK", jwk),
        ("n", n),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let t = target().await;
    let payload = t.claims().to_string();
    for (form, secret) in rsa_public_forms(t.key_of("rsa1")) {
        let hs = SigningKey::hmac(&secret);
        for alg in ["HS256", "HS384", "HS512"] {
            let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa1"}).to_string();
            let token = mint_raw(&header, &payload, |i| hs.sign(alg, i));
            t.denied(
                Want::Invalid("alg_not_allowed"),
                &format!("{alg} keyed with the RSA public key as {form}"),
                &token,
            )
            .await;
        }
    }
    control(&t).await;

    // Even where HS256 is allowed, the RSA key never becomes an HMAC secret: only the
    // configured shared secret verifies HS256, so the forgery is a bad signature.
    let var = secret_env("a-completely-different-secret-of-40-bytes");
    let extra = format!("shared_secret_env: {var}");
    let t = target_with("RS256, ES256, HS256", Some(&extra)).await;
    let payload = t.claims().to_string();
    for (form, secret) in rsa_public_forms(t.key_of("rsa1")) {
        let hs = SigningKey::hmac(&secret);
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}).to_string();
        let token = mint_raw(&header, &payload, |i| hs.sign("HS256", i));
        t.denied(
            Want::Invalid("bad_signature"),
            &format!("HS256 with the RSA key as {form}, HS256 allowed"),
            &token,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_and_x5u_are_never_fetched() {
    let t = target().await;
    let attacker = SigningKey::rsa_other("attacker");
    let attacker_issuer = Issuer::start(&[(&attacker, "RS256")]).await;
    let tripwire = Tripwire::start().await;
    let jku = attacker_issuer.jwks_url();
    let x5u = format!("http://{}/cert.pem", tripwire.addr);
    let c = t.claims();
    let cases = [
        (
            json!({"jku": jku, "kid": "attacker"}),
            "unknown_kid",
            "jku, attacker kid",
        ),
        (
            json!({"jku": jku, "kid": "rsa1"}),
            "bad_signature",
            "jku, trusted kid",
        ),
        (
            json!({"x5u": x5u, "kid": "attacker"}),
            "unknown_kid",
            "x5u, attacker kid",
        ),
        (
            json!({"x5u": x5u, "kid": "rsa1"}),
            "bad_signature",
            "x5u, trusted kid",
        ),
        (
            json!({"jku": format!("http://{}/jwks", tripwire.addr), "x5u": x5u, "kid": null}),
            "bad_signature",
            "jku and x5u, no kid",
        ),
    ];
    for (extra, reason, what) in cases {
        let token = attacker.mint_with("RS256", extra, &c);
        t.denied(Want::Invalid(reason), what, &token).await;
    }
    control(&t).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        attacker_issuer.jwks_hits(),
        0,
        "the jku server received nothing"
    );
    assert_eq!(tripwire.hits(), 0, "the x5u server received nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_jwk_and_x5c_are_never_trusted() {
    let t = target().await;
    let attacker_ec = SigningKey::p256("ec-attacker");
    let attacker_rsa = SigningKey::rsa_other("rsa-attacker");
    let c = t.claims();
    let cert = STANDARD.encode(&t.gw.pki.ca_der);
    let cases = [
        (
            &attacker_ec,
            "ES256",
            json!({"jwk": attacker_ec.jwk(), "kid": "ec-attacker"}),
            "unknown_kid",
            "jwk with its own kid",
        ),
        (
            &attacker_ec,
            "ES256",
            json!({"jwk": attacker_ec.jwk(), "kid": "ec1"}),
            "bad_signature",
            "jwk under a trusted kid",
        ),
        (
            &attacker_ec,
            "ES256",
            json!({"jwk": attacker_ec.jwk(), "kid": null}),
            "bad_signature",
            "jwk and no kid",
        ),
        (
            &attacker_rsa,
            "RS256",
            json!({"x5c": [cert], "kid": "rsa1"}),
            "bad_signature",
            "x5c under a trusted kid",
        ),
        (
            &attacker_rsa,
            "RS256",
            json!({"x5c": [cert], "kid": "rsa-attacker", "x5t": "AAAA"}),
            "unknown_kid",
            "x5c with its own kid",
        ),
    ];
    for (key, alg, extra, reason, what) in cases {
        let token = key.mint_with(alg, extra, &c);
        t.denied(Want::Invalid(reason), what, &token).await;
    }
    // A trusted key's own JWK embedded changes nothing either way: the token still verifies
    // against the JWKS copy, because the embedded one is never read.
    let token = t.mint_with(json!({"jwk": attacker_ec.jwk()}), &c);
    assert_eq!(t.gw.get("/api/x", Some(&token)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crit_header_is_refused() {
    let t = target().await;
    let c = t.claims();
    for crit in [
        json!(["exp"]),
        json!([]),
        json!(["b64"]),
        json!("exp"),
        json!(null),
    ] {
        let mut extra = json!({ "crit": crit });
        if crit == json!(["b64"]) {
            extra["b64"] = json!(false);
        }
        // `null` is removed by mint_with; send it literally.
        let token = if crit.is_null() {
            let header = r#"{"alg":"ES256","kid":"ec1","crit":null}"#;
            mint_raw(header, &c.to_string(), |i| t.sign(i))
        } else {
            t.mint_with(extra, &c)
        };
        t.denied(Want::Invalid("malformed"), &format!("crit {crit}"), &token)
            .await;
    }
    control(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_members_are_refused() {
    let t = target().await;
    let payload = t.claims().to_string();
    let sign = |header: &str, payload: &str| mint_raw(header, payload, |i| t.sign(i));
    let headers = [
        r#"{"alg":"ES256","kid":"ec1","kid":"ec1"}"#,
        r#"{"alg":"none","alg":"ES256","kid":"ec1"}"#,
        r#"{"alg":"ES256","alg":"ES256","kid":"ec1"}"#,
        r#"{"alg":"ES256","kid":"ec1","typ":"JWT","typ":"at+jwt"}"#,
        r#"{"alg":"ES256","kid":"ec1","x":{"a":1,"a":2}}"#,
        r#"{"alg":"ES256","kid":"ec1","\u0061lg":"ES256"}"#,
    ];
    for header in headers {
        t.denied(
            Want::Invalid("malformed"),
            &format!("header {header}"),
            &sign(header, &payload),
        )
        .await;
    }
    let body = payload.strip_prefix('{').expect("object");
    let payloads = [
        format!(r#"{{"sub":"admin",{body}"#),
        format!(r#"{{"iss":"https://evil.example",{body}"#),
        format!(r#"{{"exp":9999999999,{body}"#),
        format!(r#"{{"realm_access":{{"roles":["admin"]}},{body}"#),
        format!(r#"{{"nested":{{"k":1,"k":2}},{body}"#),
        format!(r#"{{"s\u0075b":"admin",{body}"#),
    ];
    for payload in payloads {
        t.denied(
            Want::Invalid("malformed"),
            &format!("payload {}", &payload[..40]),
            &sign(r#"{"alg":"ES256","kid":"ec1"}"#, &payload),
        )
        .await;
    }
    control(&t).await;
}

/// Changes the last character of an unpadded base64url text so that only its unused low bits
/// differ: a lax decoder yields the same bytes, a canonical one refuses.
fn flip_unused_bits(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused = match text.len() % 4 {
        2 => 4,
        3 => 2,
        _ => return None,
    };
    let last = *text.as_bytes().last()?;
    let value = ALPHABET.iter().position(|&c| c == last)?;
    let flipped = value ^ ((1 << unused) - 1);
    let mut out = text[..text.len() - 1].to_string();
    out.push(ALPHABET[flipped] as char);
    Some(out)
}

/// A header JSON whose base64url has unused bits (length not a multiple of 4).
fn header_with_unused_bits(base: Value) -> String {
    let mut header = base;
    for pad in 0..4 {
        header["x"] = json!("y".repeat(pad));
        let text = header.to_string();
        if b64(&text).len() % 4 != 0 {
            return text;
        }
    }
    unreachable!("one of four paddings leaves unused bits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_base64url_is_refused() {
    let t = target().await;
    let c = t.claims();
    let payload = c.to_string();

    // The signature: unused bits flipped, `=` padding, the standard alphabet.
    let mut token = t.mint(&c);
    while !token
        .rsplit_once('.')
        .expect("parts")
        .1
        .contains(['-', '_'])
    {
        token = t.mint(&c);
    }
    let (input, sig) = token.rsplit_once('.').expect("parts");
    assert_eq!(sig.len() % 4, 2, "a 64-byte signature leaves unused bits");
    let variants = [
        (
            format!("{input}.{}", flip_unused_bits(sig).expect("unused bits")),
            Want::Invalid("malformed"),
            "signature with unused bits set",
        ),
        (
            format!("{input}.{sig}=="),
            Want::Invalid("malformed"),
            "signature with = padding",
        ),
        (
            format!("{input}.{sig}="),
            Want::Invalid("malformed"),
            "signature with one =",
        ),
        (
            format!("{input}.{}", sig.replace('-', "+").replace('_', "/")),
            Want::Invalid("malformed"),
            "signature in the standard alphabet",
        ),
    ];
    for (token, want, what) in variants {
        t.denied(want, what, &token).await;
    }

    // Header and payload spelled non-canonically and then *signed by the trusted key*: only
    // the decoder stands between these tokens and the upstream.
    let header = header_with_unused_bits(json!({"alg": "ES256", "kid": "ec1"}));
    let h = b64(&header);
    let p = b64(&payload);
    let signed = |h: &str, p: &str| {
        let input = format!("{h}.{p}");
        format!("{input}.{}", b64(t.sign(input.as_bytes())))
    };
    t.denied(
        Want::Invalid("malformed"),
        "header with unused bits set, validly signed",
        &signed(&flip_unused_bits(&h).expect("unused bits"), &p),
    )
    .await;
    let mut padded_payload = c.clone();
    for pad in 0..4 {
        padded_payload["pad"] = json!("z".repeat(pad));
        if b64(padded_payload.to_string()).len() % 4 != 0 {
            break;
        }
    }
    let p2 = b64(padded_payload.to_string());
    t.denied(
        Want::Invalid("malformed"),
        "payload with unused bits set, validly signed",
        &signed(&h, &flip_unused_bits(&p2).expect("unused bits")),
    )
    .await;
    // `=` inside the token is not a b64token: the Authorization header itself is malformed.
    let pad = "=".repeat((4 - h.len() % 4) % 4);
    t.denied(
        Want::BadRequest,
        "padded header, validly signed",
        &signed(&format!("{h}{pad}"), &p),
    )
    .await;
    // The standard alphabet in the header, validly signed.
    let mut header = json!({"alg": "ES256", "kid": "ec1"});
    let mut i = 0;
    let std_header = loop {
        header["x"] = json!(format!("??>>{i}"));
        let text = header.to_string();
        let std = STANDARD.encode(&text).trim_end_matches('=').to_string();
        if std.contains(['+', '/']) {
            break std;
        }
        i += 1;
    };
    t.denied(
        Want::Invalid("malformed"),
        "header in the standard alphabet, validly signed",
        &signed(&std_header, &p),
    )
    .await;
    control(&t).await;
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` from a fixed-width `r || s` signature.
fn ecdsa_der(fixed: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut v = bytes[first..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let mut body = integer(r);
    body.extend(integer(s));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psychic_and_der_ecdsa_signatures_are_refused() {
    let t = target().await;
    let p384 = SigningKey::p384("ec384");
    let payload = t.claims().to_string();
    let header = r#"{"alg":"ES256","kid":"ec1"}"#;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0u8; 64], "psychic signature: r = s = 0"),
        (vec![0u8; 1], "a single zero byte"),
        (vec![0u8; 96], "zeros of the P-384 width"),
        (ecdsa_der(&[0u8; 64]), "psychic signature, DER-encoded"),
        (
            {
                let mut v = vec![0u8; 64];
                v[31] = 1;
                v[63] = 1;
                v
            },
            "r = s = 1",
        ),
    ];
    for (sig, what) in cases {
        let token = mint_raw(header, &payload, |_| sig.clone());
        t.denied(Want::Invalid("bad_signature"), what, &token).await;
    }
    // A genuine signature by the trusted key, carried as DER instead of r || s.
    let token = mint_raw(header, &payload, |i| ecdsa_der(&t.sign(i)));
    t.denied(
        Want::Invalid("bad_signature"),
        "valid signature in DER form",
        &token,
    )
    .await;
    // The genuine r || s with a byte appended or dropped.
    for (edit, what) in [
        (0usize, "signature with a trailing zero"),
        (1, "signature one byte short"),
    ] {
        let token = mint_raw(header, &payload, |i| {
            let mut s = t.sign(i);
            if edit == 0 {
                s.push(0);
            } else {
                s.pop();
            }
            s
        });
        t.denied(Want::Invalid("bad_signature"), what, &token).await;
    }
    // ES384 signature presented as ES256 under the P-256 kid.
    let token = mint_raw(header, &payload, |i| p384.sign("ES384", i));
    t.denied(
        Want::Invalid("bad_signature"),
        "P-384 signature under ES256",
        &token,
    )
    .await;
    control(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_key_under_a_trusted_kid_is_refused() {
    let t = target().await;
    let c = t.claims();
    t.denied(
        Want::Invalid("bad_signature"),
        "other RSA key, same kid",
        &SigningKey::rsa_other("rsa1").mint("RS256", &c),
    )
    .await;
    t.denied(
        Want::Invalid("bad_signature"),
        "other P-256 key, same kid",
        &SigningKey::p256("ec1").mint("ES256", &c),
    )
    .await;
    control(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kid_used_with_the_wrong_key_family_is_refused() {
    let t = target().await;
    let c = t.claims();
    // ES256 (allowed by the provider) under the RSA key's kid.
    t.denied(
        Want::Invalid("alg_not_allowed"),
        "ES256 under the RSA kid",
        &SigningKey::p256("rsa1").mint("ES256", &c),
    )
    .await;
    // RS256 under the EC key's kid.
    t.denied(
        Want::Invalid("alg_not_allowed"),
        "RS256 under the EC kid",
        &SigningKey::rsa_other("ec1").mint("RS256", &c),
    )
    .await;
    control(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_claims_are_refused() {
    let t = target().await;
    let now = crate::support::now();
    let cases: Vec<(&str, Value)> = vec![
        ("exp", json!((now + 3600).to_string())),
        ("exp", json!([now + 3600])),
        ("exp", json!(true)),
        ("nbf", json!(now.to_string())),
        ("iat", json!(now.to_string())),
        ("aud", json!(42)),
        ("aud", json!(["orders-api", 42])),
        ("aud", json!({"orders-api": true})),
        ("iss", json!(7)),
        ("sub", json!(12345)),
        ("jti", json!({"id": 1})),
    ];
    for (claim, value) in cases {
        let mut c = t.claims();
        c[claim] = value.clone();
        t.denied(
            Want::Invalid("malformed"),
            &format!("{claim} = {value}"),
            &t.mint(&c),
        )
        .await;
    }
    // A number beyond f64 is not a date either.
    let body = t.claims().to_string();
    let body = body.strip_prefix('{').expect("object");
    let payload = format!(
        r#"{{"zz":1,{}"#,
        body.replace(r#""exp":"#, r#""exp":1e999,"x":"#)
    );
    let token = mint_raw(r#"{"alg":"ES256","kid":"ec1"}"#, &payload, |i| t.sign(i));
    t.denied(Want::Invalid("malformed"), "exp = 1e999", &token)
        .await;
    control(&t).await;
}
