//! First-match-wins routing on host, segment-aware path prefix and method, over a table compiled
//! at config load.
//!
//! Letter case and `;` parameters are where a gateway and an upstream most quietly disagree: IIS
//! and some frameworks serve `/ADMIN` as `/admin`, servlet containers serve `/a;x/b` as `/a/b`. So
//! the table always knows the routes' case-folded prefixes too. With `case_insensitive: true` it
//! routes on them, otherwise on the exact path; and it refuses a path that, read as such an
//! upstream reads it (parameters dropped, case folded), belongs to another, protected, route: the
//! request is then neither served by the weaker route nor guessed to mean the stronger one.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::auth::keyset::ProviderKeys;
use crate::config::{RouteAuth, RouteConfig};
use crate::metrics::RouteMetrics;
use std::borrow::Cow;

use crate::path::{fold_case, prefix_matches, strip_params, PathPolicy};

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
    /// The path matched one route as written and a protected other one as an upstream that
    /// ignores case or drops `;` parameters would read it.
    Ambiguous,
}

/// Routes indexed by the first segment of their prefix, so a lookup tests only the routes that
/// could match instead of scanning a thousand; ties go to the lowest index (first in the file).
pub struct RouteTable {
    routes: Vec<Route>,
    exact: SegmentIndex,
    folded: SegmentIndex,
    case_insensitive: bool,
    /// Some prefix holds an upper-case letter: then even an all-lower-case path reads
    /// differently folded and not, and the case check cannot be skipped.
    prefix_has_upper: bool,
}

#[derive(Default)]
struct SegmentIndex {
    by_first_segment: HashMap<Box<str>, Vec<usize>, foldhash::fast::RandomState>,
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
        let prefix_has_upper = routes
            .iter()
            .any(|r| r.folded_prefix != r.config.path_prefix);
        RouteTable {
            routes,
            exact,
            folded,
            case_insensitive: policy.case_insensitive,
            prefix_has_upper,
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
    /// [`RouteMiss`]: no route, or a path that another reading puts under a protected route.
    pub fn match_route(&self, host: &str, method: &Method, path: &str) -> Result<usize, RouteMiss> {
        let folded = fold_case(path);
        let judged = if self.case_insensitive {
            self.find(&self.folded, host, method, &folded, true)
        } else {
            self.find(&self.exact, host, method, path, false)
        };
        // Every other way an upstream may read the path (parameters dropped, case folded or
        // not), looked up only where it can differ from the one routed on.
        let stripped = strip_params(path);
        let takes_elsewhere = |reading: &str, folded: bool| {
            let index = if folded { &self.folded } else { &self.exact };
            self.find(index, host, method, reading, folded)
                .is_some_and(|i| Some(i) != judged && self.routes[i].protected())
        };
        let stripped_differs = matches!(stripped, Cow::Owned(_));
        let case_matters = matches!(folded, Cow::Owned(_)) || self.prefix_has_upper;
        let ambiguous = (stripped_differs && takes_elsewhere(&stripped, false))
            || (case_matters
                && takes_elsewhere(
                    if self.case_insensitive { path } else { &folded },
                    !self.case_insensitive,
                ))
            || (stripped_differs && takes_elsewhere(&fold_case(&stripped), true));
        if ambiguous {
            return Err(RouteMiss::Ambiguous);
        }
        judged.ok_or(RouteMiss::NoRoute)
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
    fn case_sensitive_table_refuses_what_folds_or_strips_onto_a_protected_route() {
        let t = table(false);
        let cases: &[(&str, Result<&str, RouteMiss>)] = &[
            ("/admin", Ok("admin")),
            ("/admin/x", Ok("admin")),
            ("/ADMIN", Err(RouteMiss::Ambiguous)),
            ("/Admin/x", Err(RouteMiss::Ambiguous)),
            ("/aDmIn;x", Err(RouteMiss::Ambiguous)),
            ("/Reports/q", Ok("reports")),
            ("/reports/q", Err(RouteMiss::Ambiguous)),
            ("/REPORTS", Err(RouteMiss::Ambiguous)),
            ("/Public/X", Ok("public")),
            ("/adminx", Ok("public")),
            ("/ADMINX", Ok("public")),
            ("/", Ok("public")),
            ("/x;y/admin", Ok("public")),
            ("/admin;x/y", Ok("admin")),
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

    /// Routes interleaving anonymous and protected prefixes, with one upper-case prefix.
    fn hostile_table(case_insensitive: bool) -> RouteTable {
        let route = |name: &str, prefix: &str, auth: &str| {
            format!("  - {{ name: {name}, match: {{ path_prefix: \"{prefix}\" }}, upstream: \"http://127.0.0.1:1\", auth: {auth} }}\n")
        };
        let protected = "{ providers: [p] }";
        let yaml = format!(
            "server:\n  insecure_plaintext: true\n  path: {{ case_insensitive: {case_insensitive} }}\nproviders:\n  - {{ name: p, issuer: \"https://i.test\", jwks_url: \"https://i.test/k\", algorithms: [RS256] }}\nroutes:\n{}{}{}{}{}{}",
            route("admin-public", "/admin/public", "anonymous"),
            route("admin", "/admin", protected),
            route("ab", "/a/b", protected),
            route("a", "/a", "anonymous"),
            route("secure", "/Secure", protected),
            route("root", "/", "anonymous"),
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

    /// How an upstream resolves the path it is sent, in the most lenient common reading: runs of
    /// `/` merged (nginx), `%3B` decoded and `;` parameters dropped from every segment (servlet
    /// containers), and letter case ignored when `fold` (IIS).
    fn upstream_resolves(path: &str, fold: bool) -> String {
        let decoded = path.replace("%3B", ";");
        let mut out = String::new();
        for segment in decoded.split('/').skip(1) {
            let name = segment.split(';').next().unwrap_or_default();
            out.push('/');
            out.push_str(name);
        }
        while out.contains("//") {
            out = out.replace("//", "/");
        }
        if fold {
            out = fold_case(&out).into_owned();
        }
        out
    }

    fn hostile_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        const PIECES: &[&str] = &[
            "/", "/", "/", "//", ".", "..", ";", ";x", "%3B", "%3b", "%2e", "%2E", "%61", "%41",
            "a", "b", "x", "admin", "ADMIN", "Admin", "public", "Public", "secure", "Secure",
            "SECURE", "\\", "%5C", "%2F",
        ];
        prop::collection::vec(prop::sample::select(PIECES), 0..10)
            .prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// The invariant the path stages exist for: whatever route the upstream's own reading of
        /// the forwarded path belongs to is never a protected route other than the one judged.
        #[test]
        fn upstream_never_resolves_a_protected_route_the_gateway_did_not_judge(
            raw in hostile_path(),
            merge_slashes: bool,
            case_insensitive: bool,
        ) {
            let table = hostile_table(case_insensitive);
            let policy = PathPolicy { merge_slashes, case_insensitive };
            let Ok(forwarded) = crate::path::normalize_path(&raw, policy) else { return Ok(()) };
            let Ok(judged) = table.match_route("h", &Method::GET, &forwarded) else { return Ok(()) };
            for upstream_folds in [false, true] {
                let resolved = upstream_resolves(&forwarded, upstream_folds);
                let index = if upstream_folds { &table.folded } else { &table.exact };
                if let Some(executed) = table.find(index, "h", &Method::GET, &resolved, upstream_folds) {
                    let route = &table.routes()[executed];
                    proptest::prop_assert!(
                        !route.protected() || executed == judged,
                        "{raw:?} -> forwarded {forwarded:?} judged by {:?}, upstream (folding: {upstream_folds}) reads {resolved:?}: {:?}",
                        table.routes()[judged].name(),
                        route.name(),
                    );
                }
            }
        }
    }
}
