//! Property tests of the validator as a library: random input never panics, and no mutation,
//! truncation or recombination of genuine tokens is ever accepted.
//!
//! "Accepted" is the full path a request takes after the cache: strict `decode`, the provider's
//! allow-list, the key chosen by `kid`, `VerifyingKey::verify`, then `check_claims`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use jwt_gateway::auth::jwk::{parse_jwks, VerifyingKey};
use jwt_gateway::auth::token::{check_claims, decode, unix_now};
use jwt_gateway::config::ProviderConfig;
use jwt_gateway::denial::Reason;
use proptest::prelude::*;
use serde_json::json;

use crate::support::keys::b64;
use crate::support::yaml::{protected, provider_at, Config};
use crate::support::{claims, Issuer, SigningKey};

const ISSUER: &str = "https://issuer.test/realms/props";

struct Fixture {
    provider: Arc<ProviderConfig>,
    keys: Vec<VerifyingKey>,
    /// Genuine tokens, each accepted: two per key so parts can be recombined across tokens of
    /// the same key as well as across keys.
    tokens: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let yaml = Config::new()
            .provider(
                provider_at(ISSUER, "https://issuer.test/jwks")
                    .name("props")
                    .algorithms("RS256, PS256, ES256, ES384, EdDSA")
                    .line("require_claims: [exp, sub]"),
            )
            .route(protected("api", "/api", "http://127.0.0.1:9").providers(&["props"]))
            .yaml();
        let config = jwt_gateway::config::compile_str(&yaml, Path::new("."))
            .unwrap_or_else(|e| panic!("fixture config: {e:?}"));
        let provider = config.providers[0].clone();
        let rsa = SigningKey::rsa("rsa");
        let p256 = SigningKey::p256("p256");
        let p384 = SigningKey::p384("p384");
        let ed = SigningKey::ed25519("ed");
        let mut jwks = Issuer::jwks_of(&[(&p256, "ES256"), (&p384, "ES384"), (&ed, "EdDSA")]);
        let mut rsa_jwk = rsa.jwk();
        rsa_jwk.as_object_mut().expect("object").remove("alg");
        jwks["keys"].as_array_mut().expect("keys").push(rsa_jwk);
        let parsed =
            parse_jwks(jwks.to_string().as_bytes(), &provider.algorithms).expect("fixture JWKS");
        assert_eq!(parsed.keys.len(), 4, "skipped: {:?}", parsed.skipped);
        let mut tokens = Vec::new();
        for (key, alg) in [
            (&rsa, "RS256"),
            (&rsa, "PS256"),
            (&p256, "ES256"),
            (&p384, "ES384"),
            (&ed, "EdDSA"),
        ] {
            for sub in ["alice", "bob"] {
                let mut c = claims(ISSUER, "orders-api");
                c["sub"] = json!(sub);
                tokens.push(key.mint(alg, &c));
            }
        }
        let fixture = Fixture {
            provider,
            keys: parsed.keys,
            tokens,
        };
        for t in &fixture.tokens {
            assert!(accept(&fixture, t).is_ok(), "fixture token refused: {t}");
        }
        fixture
    })
}

/// The validator's verdict on one token, the way `verify_uncached` reaches it.
fn accept(fx: &Fixture, token: &str) -> Result<(), Reason> {
    let decoded = decode(token)?;
    if !fx.provider.algorithms.contains(&decoded.alg) {
        return Err(Reason::AlgNotAllowed);
    }
    let key = fx
        .keys
        .iter()
        .find(|k| k.kid.as_deref() == decoded.kid.as_deref())
        .ok_or(Reason::UnknownKid)?;
    if !key.supports(decoded.alg) {
        return Err(Reason::AlgNotAllowed);
    }
    if !key.verify(decoded.alg, decoded.signing_input, &decoded.signature) {
        return Err(Reason::BadSignature);
    }
    check_claims(decoded, &fx.provider, unix_now()).map(|_| ())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Characters a mutation may write: the base64url alphabet, the separator, and the usual
/// suspects of lax decoders.
const MUTATIONS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \0\xff";

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let text = String::from_utf8_lossy(&bytes);
        let fx = fixture();
        let _ = decode(&text);
        prop_assert!(accept(fx, &text).is_err());
    }

    #[test]
    fn random_token_shaped_text_never_panics(
        text in "[A-Za-z0-9_=+/-]{0,300}\\.[A-Za-z0-9_=+/-]{0,300}\\.[A-Za-z0-9_=+/-]{0,300}"
    ) {
        prop_assert!(accept(fixture(), &text).is_err());
    }

    #[test]
    fn random_json_in_a_token_never_panics(
        header in any::<String>(),
        payload in "\\{(\"[a-z]{1,4}\":(-?[0-9]{1,20}(\\.[0-9]{1,5})?|\"[^\"]{0,8}\"|\\[\\]|\\{\\}|null|true),?){0,6}\\}",
        which in 0usize..10,
    ) {
        let fx = fixture();
        let sig = fx.tokens[which].rsplit_once('.').expect("parts").1;
        for h in [header.clone(), r#"{"alg":"ES256","kid":"p256"}"#.to_string()] {
            let token = format!("{}.{}.{sig}", b64(&h), b64(&payload));
            prop_assert!(accept(fx, &token).is_err());
        }
    }

    #[test]
    fn single_byte_mutations_are_never_accepted(
        which in 0usize..10,
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(MUTATIONS),
    ) {
        let fx = fixture();
        let token = fx.tokens[which].as_bytes();
        let i = at.index(token.len());
        prop_assume!(token[i] != with);
        let mut mutated = token.to_vec();
        mutated[i] = with;
        let mutated = String::from_utf8_lossy(&mutated);
        prop_assert!(accept(fx, &mutated).is_err(), "accepted with byte {} set to {:?}", i, with as char);
    }

    #[test]
    fn flipped_bits_are_never_accepted(
        which in 0usize..10,
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let fx = fixture();
        let mut bytes = fx.tokens[which].as_bytes().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let mutated = String::from_utf8_lossy(&bytes);
        prop_assert!(accept(fx, &mutated).is_err());
    }

    #[test]
    fn truncations_and_deletions_are_never_accepted(
        which in 0usize..10,
        at in any::<prop::sample::Index>(),
        len in 1usize..8,
    ) {
        let fx = fixture();
        let token = &fx.tokens[which];
        let i = at.index(token.len());
        prop_assert!(accept(fx, &token[..i]).is_err(), "prefix of {} bytes accepted", i);
        let end = (i + len).min(token.len());
        let cut = format!("{}{}", &token[..i], &token[end..]);
        prop_assert!(accept(fx, &cut).is_err(), "bytes {}..{} removed, accepted", i, end);
    }

    #[test]
    fn insertions_are_never_accepted(
        which in 0usize..10,
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(MUTATIONS),
    ) {
        let fx = fixture();
        let token = &fx.tokens[which];
        let i = at.index(token.len() + 1);
        let grown = format!("{}{}{}", &token[..i], with as char, &token[i..]);
        prop_assert!(accept(fx, &grown).is_err());
    }
}

/// Every recombination of parts across all genuine tokens, and every reordering within one:
/// only the untouched tokens verify.
#[test]
fn part_swaps_and_recombinations_are_never_accepted() {
    let fx = fixture();
    let parts: Vec<[&str; 3]> = fx
        .tokens
        .iter()
        .map(|t| {
            let mut it = t.split('.');
            [
                it.next().expect("header"),
                it.next().expect("payload"),
                it.next().expect("signature"),
            ]
        })
        .collect();
    let mut tried = 0;
    for (a, pa) in parts.iter().enumerate() {
        for (b, pb) in parts.iter().enumerate() {
            for (c, pc) in parts.iter().enumerate() {
                let token = format!("{}.{}.{}", pa[0], pb[1], pc[2]);
                // Tokens of one key and algorithm share their header text.
                let genuine = fx.tokens.contains(&token);
                assert_eq!(
                    accept(fx, &token).is_ok(),
                    genuine,
                    "header {a}, payload {b}, signature {c}"
                );
                tried += 1;
            }
        }
        for order in [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let token = order.map(|i| pa[i]).join(".");
            assert!(accept(fx, &token).is_err(), "token {a} reordered {order:?}");
            tried += 1;
        }
        // Parts doubled or dropped.
        for token in [
            format!("{}.{}", pa[0], pa[1]),
            format!("{}.{}.{}.{}", pa[0], pa[1], pa[2], pa[2]),
            format!("{}.{}.{}", pa[0], pa[0], pa[2]),
            format!("{}..{}", pa[0], pa[2]),
            format!(".{}.{}", pa[1], pa[2]),
        ] {
            assert!(accept(fx, &token).is_err(), "token {a}: {token}");
            tried += 1;
        }
    }
    assert!(tried > 1000);
}
