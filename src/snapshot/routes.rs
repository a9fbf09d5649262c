//! First-match-wins routing on host, segment-aware path prefix and method, over a table compiled
//! at config load.
//!
//! Letter case is where a gateway and an upstream most quietly disagree: IIS and some frameworks
//! serve `/ADMIN` as `/admin`. So the table always knows the routes' case-folded prefixes too.
//! With `case_insensitive: true` it routes on them; otherwise it routes on the exact path and
//! refuses a path whose folded form belongs to another, protected, route: the request is then
//! neither served by the weaker route nor guessed to mean the stronger one.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::auth::keyset::ProviderKeys;
use crate::config::{RouteAuth, RouteConfig};
use crate::metrics::RouteMetrics;
use crate::path::{fold_case, prefix_matches, PathPolicy};

/// A route with everything the request path needs resolved: provider handles, metric handles.
pub struct Route {
    pub config: RouteConfig,
    /// The providers that may authenticate this route, in config order (empty when anonymous).
    pub providers: Vec<Arc<ProviderKeys>>,
    pub metrics: RouteMetrics,
    /// `path_prefix` as a case-insensitive upstream reads it.
    folded_prefix: String,
}

impl Route {
    pub fn new(
        config: RouteConfig,
        providers: Vec<Arc<ProviderKeys>>,
        metrics: RouteMetrics,
    ) -> Route {
        Route {
            folded_prefix: fold_case(&config.path_prefix).into_owned(),
            config,
            providers,
            metrics,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn protected(&self) -> bool {
        !matches!(self.config.auth, RouteAuth::Anonymous)
    }

    fn matches(&self, host: &str, method: &Method, path: &str, folded: bool) -> bool {
        let c = &self.config;
        let prefix = if folded {
            &self.folded_prefix
        } else {
            &c.path_prefix
        };
        c.host.as_ref().is_none_or(|h| h.matches(host))
            && c.methods.as_ref().is_none_or(|m| m.contains(method))
            && prefix_matches(path, prefix)
    }
}

/// Why no route takes a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMiss {
    NoRoute,
    /// The path matched one route as written and a protected other one once case-folded.
    CaseConflict,
}

/// Routes indexed by the first segment of their prefix, so a lookup tests only the routes that
/// could match instead of scanning a thousand; ties go to the lowest index (first in the file).
pub struct RouteTable {
    routes: Vec<Route>,
    exact: SegmentIndex,
    folded: SegmentIndex,
    case_insensitive: bool,
    /// Some protected prefix holds an upper-case letter: then even an all-lower-case path can
    /// fold onto it, and the conflict check cannot be skipped.
    protected_prefix_has_upper: bool,
}

#[derive(Default)]
struct SegmentIndex {
    by_first_segment: HashMap<Box<str>, Vec<usize>>,
    /// Routes whose prefix is `/` are tried for every path.
    everywhere: Vec<usize>,
}

impl SegmentIndex {
    fn new<'a>(prefixes: impl Iterator<Item = &'a str>) -> SegmentIndex {
        let mut index = SegmentIndex::default();
        for (i, prefix) in prefixes.enumerate() {
            match first_segment(prefix) {
                Some(seg) => index
                    .by_first_segment
                    .entry(seg.into())
                    .or_default()
                    .push(i),
                None => index.everywhere.push(i),
            }
        }
        index
    }

    fn find(&self, path: &str, matches: impl Fn(usize) -> bool) -> Option<usize> {
        let segment_routes = first_segment(path)
            .and_then(|seg| self.by_first_segment.get(seg))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let best_segment = segment_routes.iter().copied().find(|&i| matches(i));
        let best_everywhere = self.everywhere.iter().copied().find(|&i| matches(i));
        match (best_segment, best_everywhere) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl RouteTable {
    pub fn new(routes: Vec<Route>, policy: PathPolicy) -> RouteTable {
        let exact = SegmentIndex::new(routes.iter().map(|r| r.config.path_prefix.as_str()));
        let folded = SegmentIndex::new(routes.iter().map(|r| r.folded_prefix.as_str()));
        let protected_prefix_has_upper = routes
            .iter()
            .any(|r| r.protected() && r.folded_prefix != r.config.path_prefix);
        RouteTable {
            routes,
            exact,
            folded,
            case_insensitive: policy.case_insensitive,
            protected_prefix_has_upper,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The index of the route for a request. `host` is lower-case without port; `path` is
    /// normalized.
    ///
    /// # Errors
    ///
    /// [`RouteMiss`]: no route, or (case-sensitive tables) a case conflict.
    pub fn match_route(&self, host: &str, method: &Method, path: &str) -> Result<usize, RouteMiss> {
        let folded_path = fold_case(path);
        if self.case_insensitive {
            return self
                .find(&self.folded, host, method, &folded_path, true)
                .ok_or(RouteMiss::NoRoute);
        }
        let exact = self.find(&self.exact, host, method, path, false);
        let might_fold_elsewhere =
            matches!(folded_path, std::borrow::Cow::Owned(_)) || self.protected_prefix_has_upper;
        if might_fold_elsewhere {
            if let Some(folded) = self.find(&self.folded, host, method, &folded_path, true) {
                if Some(folded) != exact && self.routes[folded].protected() {
                    return Err(RouteMiss::CaseConflict);
                }
            }
        }
        exact.ok_or(RouteMiss::NoRoute)
    }

    fn find(
        &self,
        index: &SegmentIndex,
        host: &str,
        method: &Method,
        path: &str,
        folded: bool,
    ) -> Option<usize> {
        index.find(path, |i| self.routes[i].matches(host, method, path, folded))
    }
}

/// The text of the first path segment, ending at `/`, `;` or `%3B` as prefix matching does.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let end = rest.find(['/', ';']).unwrap_or(rest.len());
    let end = rest[..end].find("%3B").unwrap_or(end);
    // A prefix like `/ab` must still index under `ab` for paths `/ab/..`; an empty first segment
    // (`/`) cannot be indexed.
    (end > 0).then(|| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile_str;
    use crate::metrics::Metrics;

    /// Routes in this order: protected `/admin`, protected `/Reports`, anonymous `/`.
    fn table(case_insensitive: bool) -> RouteTable {
        let yaml = format!(
            r#"
server:
  insecure_plaintext: true
  path: {{ case_insensitive: {case_insensitive} }}
providers:
  - {{ name: p, issuer: "https://i.test", jwks_url: "https://i.test/k", algorithms: [RS256] }}
routes:
  - {{ name: admin, match: {{ path_prefix: /admin }}, upstream: "http://127.0.0.1:1", auth: {{ providers: [p] }} }}
  - {{ name: reports, match: {{ path_prefix: /Reports }}, upstream: "http://127.0.0.1:1", auth: {{ providers: [p] }} }}
  - {{ name: public, match: {{ path_prefix: / }}, upstream: "http://127.0.0.1:1", auth: anonymous }}
"#
        );
        let config = compile_str(&yaml, std::path::Path::new(".")).expect("config");
        let metrics = Metrics::new();
        let routes = config
            .routes
            .iter()
            .map(|rc| Route::new(rc.clone(), Vec::new(), metrics.route(&rc.name)))
            .collect();
        RouteTable::new(routes, config.server.path)
    }

    fn route_of<'t>(table: &'t RouteTable, path: &str) -> Result<&'t str, RouteMiss> {
        table
            .match_route("h", &Method::GET, path)
            .map(|i| table.routes()[i].name())
    }

    #[test]
    fn case_sensitive_table_refuses_what_folds_onto_a_protected_route() {
        let t = table(false);
        let cases: &[(&str, Result<&str, RouteMiss>)] = &[
            ("/admin", Ok("admin")),
            ("/admin/x", Ok("admin")),
            ("/ADMIN", Err(RouteMiss::CaseConflict)),
            ("/Admin/x", Err(RouteMiss::CaseConflict)),
            ("/aDmIn;x", Err(RouteMiss::CaseConflict)),
            ("/Reports/q", Ok("reports")),
            ("/reports/q", Err(RouteMiss::CaseConflict)),
            ("/REPORTS", Err(RouteMiss::CaseConflict)),
            ("/Public/X", Ok("public")),
            ("/adminx", Ok("public")),
            ("/ADMINX", Ok("public")),
            ("/", Ok("public")),
        ];
        for (path, want) in cases {
            assert_eq!(route_of(&t, path), *want, "{path:?}");
        }
    }

    #[test]
    fn case_insensitive_table_routes_on_folded_prefixes() {
        let t = table(true);
        for (path, want) in [
            ("/ADMIN", "admin"),
            ("/Admin/x", "admin"),
            ("/reports", "reports"),
            ("/REPORTS/1", "reports"),
            ("/other", "public"),
        ] {
            assert_eq!(route_of(&t, path), Ok(want), "{path:?}");
        }
    }
}
