//! The optional brake on brute force: a client with more than `auth_failures_per_minute`
//! authentication failures is answered 429 until its minute is over, before any signature is
//! checked on its behalf. A client is an IPv4 address or an IPv6 /64: one host is routinely given
//! a whole /64 (RFC 6177, SLAAC privacy addresses), so keying by full IPv6 address would hand an
//! attacker 2^64 fresh budgets.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use ipnet::IpNet;
use moka::sync::Cache;

const WINDOW: Duration = Duration::from_secs(60);
/// Distinct client IPs tracked at once; beyond it the least recently seen are forgotten.
const MAX_CLIENTS: u64 = 100_000;

struct Window {
    started: Instant,
    failures: AtomicU32,
}

pub struct FailureThrottle {
    windows: Cache<IpAddr, Arc<Window>>,
}

impl Default for FailureThrottle {
    fn default() -> Self {
        FailureThrottle::new()
    }
}

impl FailureThrottle {
    pub fn new() -> FailureThrottle {
        FailureThrottle {
            windows: Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_live(WINDOW)
                .build(),
        }
    }

    /// `Some(seconds to wait)` when `client` already failed `limit` times in its current window.
    pub fn blocked(&self, client: IpAddr, limit: u32) -> Option<u32> {
        let window = self.windows.get(&throttle_key(client))?;
        let age = window.started.elapsed();
        if window.failures.load(Ordering::Relaxed) < limit || age >= WINDOW {
            return None;
        }
        Some((WINDOW - age).as_secs().max(1) as u32)
    }

    pub fn record_failure(&self, client: IpAddr) {
        let window = self.windows.get_with(throttle_key(client), || {
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        window.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The budget an address draws on: IPv4 by address (an IPv4-mapped IPv6 address counts as its
/// IPv4 address), IPv6 by its /64.
pub fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The address a limit applies to: the peer, or, behind trusted proxies, the nearest
/// `X-Forwarded-For` hop that is not itself a trusted proxy, found by walking the hops from the
/// right (the ones our proxies appended) and skipping trusted addresses. A hop that is not an
/// address (`unknown`, garbage) means the chain can no longer be followed: the peer is used, never
/// a hop further left, which the client could have written. When every hop is trusted the
/// leftmost one is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut lines = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(text) => lines.push(text),
            Err(_) => return peer,
        }
    }
    let mut nearest = peer;
    for hop in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        let hop = hop.trim();
        if hop.is_empty() {
            continue;
        }
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// One `X-Forwarded-For` element: an address, or an address with a port as some proxies write it
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`, `[2001:db8::1]`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_within_the_window() {
        let t = FailureThrottle::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(t.blocked(ip, 2), None);
        t.record_failure(ip);
        assert_eq!(t.blocked(ip, 2), None);
        t.record_failure(ip);
        let wait = t.blocked(ip, 2).unwrap();
        assert!((1..=60).contains(&wait));
        assert_eq!(
            t.blocked("192.0.2.2".parse().unwrap(), 2),
            None,
            "per client"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn client_ip_looks_through_trusted_proxies_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&["198.51.100.7, 10.0.0.3"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn client_ip_takes_the_nearest_untrusted_hop_from_the_right() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:ffff::/48".parse().unwrap(),
        ];
        let peer = ip("10.0.0.2");
        let cases: &[(&[&str], &str)] = &[
            // The client's own claim on the left is ignored: the hop our proxy appended wins.
            (&["1.1.1.1, 198.51.100.7, 10.0.0.3"], "198.51.100.7"),
            (
                &["1.1.1.1", "198.51.100.7", "10.0.0.3, 10.9.9.9"],
                "198.51.100.7",
            ),
            (&["2001:db8:1:2::5, 2001:db8:ffff::1"], "2001:db8:1:2::5"),
            (&["[2001:db8:1:2::5]:4711, 10.0.0.3"], "2001:db8:1:2::5"),
            (&["198.51.100.7:4711"], "198.51.100.7"),
            // Malformed hops: the chain breaks there, the peer is used, never a hop further left.
            (&["198.51.100.7, unknown, 10.0.0.3"], "10.0.0.2"),
            (&["198.51.100.7, 10.0.0.3 garbage"], "10.0.0.2"),
            (&["198.51.100.7, 999.1.1.1"], "10.0.0.2"),
            // Every hop trusted: the leftmost is the furthest client known.
            (&["10.1.1.1, 10.0.0.3"], "10.1.1.1"),
            // No header, or only empty elements: the peer.
            (&[], "10.0.0.2"),
            (&[" , "], "10.0.0.2"),
        ];
        for (values, want) in cases {
            assert_eq!(
                client_ip(peer, &xff(values), &trusted),
                ip(want),
                "{values:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"198.51.100.7, \xff").unwrap(),
        );
        assert_eq!(client_ip(peer, &h, &trusted), peer, "non-ASCII header");
    }

    #[test]
    fn ipv6_shares_a_budget_per_64_and_ipv4_per_address() {
        assert_eq!(
            throttle_key(ip("2001:db8:1:2:aaaa::1")),
            throttle_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(
            throttle_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            throttle_key(ip("2001:db8:1:2::1")),
            throttle_key(ip("2001:db8:1:3::1"))
        );
        assert_ne!(throttle_key(ip("192.0.2.1")), throttle_key(ip("192.0.2.2")));
        assert_eq!(throttle_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));

        let t = FailureThrottle::new();
        t.record_failure(ip("2001:db8:1:2::1"));
        t.record_failure(ip("2001:db8:1:2::2"));
        assert!(t.blocked(ip("2001:db8:1:2::3"), 2).is_some(), "one /64");
        assert_eq!(t.blocked(ip("2001:db8:1:3::1"), 2), None, "the next /64");
        t.record_failure(ip("::ffff:192.0.2.1"));
        t.record_failure(ip("192.0.2.1"));
        assert!(
            t.blocked(ip("192.0.2.1"), 2).is_some(),
            "mapped = plain IPv4"
        );
        assert_eq!(t.blocked(ip("192.0.2.2"), 2), None);
    }

    proptest::proptest! {
        /// Whatever a client writes into `X-Forwarded-For` ends up left of the hops our trusted
        /// proxies append: it can never choose the key when the nearest appended hop is a
        /// well-formed untrusted address.
        #[test]
        fn what_the_client_wrote_never_picks_the_key(
            written in "[0-9a-fA-F:.,\\[\\] unkow%]{0,40}",
            client in proptest::prelude::any::<[u8; 16]>(),
            v4 in proptest::prelude::any::<bool>(),
            through_trusted_hop in proptest::prelude::any::<bool>(),
        ) {
            let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
            let mut client = if v4 {
                IpAddr::from([client[0], client[1], client[2], client[3]])
            } else {
                IpAddr::from(client)
            };
            if trusted.iter().any(|n| n.contains(&client)) {
                client = ip("198.51.100.1");
            }
            let mut value = format!("{written}, {client}");
            if through_trusted_hop {
                value.push_str(", 10.1.2.3");
            }
            let Ok(header) = http::HeaderValue::from_str(&value) else {
                return Ok(());
            };
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", header);
            proptest::prop_assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), client);
            let key = throttle_key(client);
            proptest::prop_assert_eq!(throttle_key(key), key);
        }
    }
}
