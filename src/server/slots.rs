//! `limits.max_connections` and `limits.max_connections_per_ip`: a connection is admitted at
//! accept, before TLS, or closed right there; an admitted one holds a [`Slot`] until its socket
//! is gone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

use crate::auth::throttle::throttle_key;
use crate::metrics::{ConnectionMetrics, ConnectionRefusal};

/// The public listener's open connections, in total and per client address.
pub struct ConnectionSlots {
    // One lock at accept and one at close, never on the request path: a connection is admitted
    // against both counts at once, so two racing accepts cannot both take the last slot.
    open: Mutex<OpenCounts>,
    metrics: ConnectionMetrics,
}

#[derive(Default)]
struct OpenCounts {
    total: usize,
    /// Keyed like the auth-failure throttle: IPv4 by address, IPv6 by /64, so one host cannot
    /// spread itself over the addresses of its prefix. Entries leave at zero.
    per_ip: HashMap<IpAddr, usize>,
}

/// What admission compares against; read from the current snapshot at every accept, so a
/// reload applies to the next connection.
#[derive(Clone, Copy, Debug)]
pub struct Caps<'a> {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Proxies and load balancers carry many clients on their connections: only the total
    /// applies to them.
    pub trusted_proxies: &'a [IpNet],
}

impl ConnectionSlots {
    pub fn new(metrics: ConnectionMetrics) -> Arc<ConnectionSlots> {
        metrics.open.set(0);
        Arc::new(ConnectionSlots {
            open: Mutex::default(),
            metrics,
        })
    }

    /// A slot for a connection from `peer`, or why there is none (counted).
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        caps: Caps<'_>,
    ) -> Result<Slot, ConnectionRefusal> {
        let key = throttle_key(peer);
        let capped = !caps.trusted_proxies.iter().any(|net| net.contains(&peer));
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let refusal = if open.total >= caps.max_connections {
            Some(ConnectionRefusal::Global)
        } else if capped
            && open.per_ip.get(&key).copied().unwrap_or(0) >= caps.max_connections_per_ip
        {
            Some(ConnectionRefusal::PerIp)
        } else {
            None
        };
        if let Some(why) = refusal {
            drop(open);
            self.metrics.refused(why);
            return Err(why);
        }
        open.total += 1;
        *open.per_ip.entry(key).or_insert(0) += 1;
        drop(open);
        self.metrics.open.inc();
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    fn release(&self, key: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&key);
            }
        }
        drop(open);
        self.metrics.open.dec();
    }
}

/// One admitted connection. Dropped with the connection's socket, however it ends: a failed
/// TLS handshake, a close, or the end of a WebSocket tunnel the socket was handed to.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn caps(total: usize, per_ip: usize) -> Caps<'static> {
        Caps {
            max_connections: total,
            max_connections_per_ip: per_ip,
            trusted_proxies: &[],
        }
    }

    #[test]
    fn admits_up_to_each_cap_and_frees_on_drop() {
        let metrics = Metrics::new();
        let slots = ConnectionSlots::new(metrics.connections());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.admit(a, caps(3, 2)).unwrap();
        let _second = slots.admit(a, caps(3, 2)).unwrap();
        assert_eq!(
            slots.admit(a, caps(3, 2)).err(),
            Some(ConnectionRefusal::PerIp)
        );
        let _third = slots.admit(b, caps(3, 2)).unwrap();
        assert_eq!(
            slots.admit(b, caps(3, 2)).err(),
            Some(ConnectionRefusal::Global)
        );
        drop(first);
        let _again = slots
            .admit(a, caps(3, 2))
            .expect("a closed connection frees its slot");
        let text = metrics.render();
        assert!(text.contains("gateway_open_connections 3"), "{text}");
        assert!(text.contains("gateway_connections_refused_total{reason=\"per_ip\"} 1"));
        assert!(text.contains("gateway_connections_refused_total{reason=\"global\"} 1"));
    }

    #[test]
    fn one_ipv6_prefix_shares_a_budget_and_proxies_skip_it() {
        let slots = ConnectionSlots::new(Metrics::new().connections());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _held = slots.admit(one, caps(10, 1)).unwrap();
        assert_eq!(
            slots.admit(same_64, caps(10, 1)).err(),
            Some(ConnectionRefusal::PerIp)
        );
        assert!(slots.admit(other_64, caps(10, 1)).is_ok());

        let proxy: IpAddr = "10.0.0.7".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse::<IpNet>().unwrap()];
        let behind_proxy = Caps {
            trusted_proxies: &trusted,
            ..caps(10, 1)
        };
        let _p1 = slots.admit(proxy, behind_proxy).unwrap();
        assert!(slots.admit(proxy, behind_proxy).is_ok());
    }
}
