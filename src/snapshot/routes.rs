//! First-match-wins routing on host, segment-aware path prefix and method, over a table compiled
//! at config load.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::auth::keyset::ProviderKeys;
use crate::config::{RouteAuth, RouteConfig};
use crate::metrics::RouteMetrics;
use crate::path::prefix_matches;

/// A route with everything the request path needs resolved: provider handles, metric handles.
pub struct Route {
    pub config: RouteConfig,
    /// The providers that may authenticate this route, in config order (empty when anonymous).
    pub providers: Vec<Arc<ProviderKeys>>,
    pub metrics: RouteMetrics,
}

impl Route {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self.config.auth, RouteAuth::Anonymous)
    }

    fn matches(&self, host: &str, method: &Method, path: &str) -> bool {
        let c = &self.config;
        c.host.as_ref().is_none_or(|h| h.matches(host))
            && c.methods.as_ref().is_none_or(|m| m.contains(method))
            && prefix_matches(path, &c.path_prefix)
    }
}

/// Routes indexed by the first segment of their prefix, so a lookup tests only the routes that
/// could match instead of scanning a thousand; ties go to the lowest index (first in the file).
pub struct RouteTable {
    routes: Vec<Route>,
    by_first_segment: HashMap<Box<str>, Vec<usize>>,
    /// Routes whose prefix is `/` (or another prefix without a first segment) are tried for every path.
    everywhere: Vec<usize>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let mut by_first_segment: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut everywhere = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            match first_segment(&route.config.path_prefix) {
                Some(seg) => by_first_segment.entry(seg.into()).or_default().push(i),
                None => everywhere.push(i),
            }
        }
        RouteTable {
            routes,
            by_first_segment,
            everywhere,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `host` is lower-case without port; `path` is normalized.
    pub fn match_route(&self, host: &str, method: &Method, path: &str) -> Option<&Route> {
        self.match_route_index(host, method, path)
            .map(|i| &self.routes[i])
    }

    pub fn match_route_index(&self, host: &str, method: &Method, path: &str) -> Option<usize> {
        let segment_routes = first_segment(path)
            .and_then(|seg| self.by_first_segment.get(seg))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let best_segment = segment_routes
            .iter()
            .copied()
            .find(|&i| self.routes[i].matches(host, method, path));
        let best_everywhere = self
            .everywhere
            .iter()
            .copied()
            .find(|&i| self.routes[i].matches(host, method, path));
        match (best_segment, best_everywhere) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The text of the first path segment, ending at `/`, `;` or `%3B` as prefix matching does.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let end = rest.find(['/', ';']).unwrap_or(rest.len());
    let end = rest[..end].find("%3B").unwrap_or(end);
    // A prefix like `/ab` must still index under `ab` for paths `/ab/..`; an empty first segment
    // (`/` or `//x`) cannot be indexed.
    (end > 0).then(|| &rest[..end])
}

/// Host of a request: lower-cased, without port, for matching.
pub fn request_host(authority: &str) -> String {
    let without_port = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}
