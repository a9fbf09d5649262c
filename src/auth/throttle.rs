//! The optional brake on brute force: a client IP with more than `auth_failures_per_minute`
//! authentication failures is answered 429 until its minute is over, before any signature is
//! checked on its behalf.

use std::net::IpAddr;
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
        let window = self.windows.get(&client)?;
        let age = window.started.elapsed();
        if window.failures.load(Ordering::Relaxed) < limit || age >= WINDOW {
            return None;
        }
        Some((WINDOW - age).as_secs().max(1) as u32)
    }

    pub fn record_failure(&self, client: IpAddr) {
        let window = self.windows.get_with(client, || {
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        window.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The address a limit applies to: the peer, or, behind trusted proxies, the nearest address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
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

    #[test]
    fn client_ip_looks_through_trusted_proxies_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7, 10.0.0.3".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip("203.0.113.9".parse().unwrap(), &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }
}
