//! gateway.yaml from parts, so a test states only what its config has that the others' lack:
//! `server()`, `provider(&issuer)`, `anonymous(..)` and `protected(..)` routes, joined by
//! `Config::new()` with admin, revocation and other sections; `basic` and `every_rule` are the
//! shapes many tests share. Each part renders the YAML the tests used to paste, and `Config`
//! prints as the whole file. `TestGateway::start(yaml)` still takes any text, for the tests whose
//! wording is the point (config errors, the differential tests' route tables).

use std::fmt::{self, Display, Write};

use super::{Issuer, Upstream};

/// `text`'s lines, each indented by `by` spaces and ended by a newline.
fn indented(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{:by$}{l}\n", "")).collect()
}

/// `["a", "b"]`: a flow sequence of quoted strings.
fn quoted(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// The `server:` section: plaintext unless `tls()`, default limits unless `limits(..)`.
#[derive(Clone)]
pub struct Server {
    listen: Option<u16>,
    tls: Option<String>,
    limits: Vec<String>,
    lines: Vec<String>,
}

/// `server: { insecure_plaintext: true }`, listening where the test harness says.
pub fn server() -> Server {
    Server {
        listen: None,
        tls: None,
        limits: Vec::new(),
        lines: Vec::new(),
    }
}

impl Server {
    /// `listen: "127.0.0.1:port"`, for the binary run as a process.
    pub fn listen(mut self, port: u16) -> Server {
        self.listen = Some(port);
        self
    }

    /// TLS with the certificate `TestGateway` writes beside the config.
    pub fn tls(self) -> Server {
        self.tls_files("gateway.crt", "gateway.key")
    }

    /// TLS with these certificate and key files.
    pub fn tls_files(mut self, cert: &str, key: &str) -> Server {
        self.tls = Some(format!("cert_file: {cert}, key_file: {key}"));
        self
    }

    /// TLS with the test certificate and `hsts_max_age`.
    pub fn hsts(self, max_age: &str) -> Server {
        let mut s = self.tls();
        if let Some(tls) = &mut s.tls {
            write!(tls, ", hsts_max_age: {max_age}").expect("write to a String");
        }
        s
    }

    /// TLS with the test certificate, asking clients for certificates that chain to `ca_file`
    /// (`mode`: `optional` or `required`).
    pub fn client_auth(self, mode: &str, ca_file: &std::path::Path) -> Server {
        let mut s = if self.tls.is_some() { self } else { self.tls() };
        if let Some(tls) = &mut s.tls {
            write!(
                tls,
                ", client_auth: {{ mode: {mode}, ca_file: \"{}\" }}",
                ca_file.display()
            )
            .expect("write to a String");
        }
        s
    }

    /// Entries of `limits:`, e.g. `"max_body_bytes: 1000, header_read_timeout: 1s"`.
    pub fn limits(mut self, limits: &str) -> Server {
        if !limits.is_empty() {
            self.limits.push(limits.to_string());
        }
        self
    }

    /// Any other key of the section, e.g. `trusted_proxies: ["127.0.0.1"]`.
    pub fn line(mut self, line: &str) -> Server {
        self.lines.push(line.to_string());
        self
    }
}

impl Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "server:")?;
        if let Some(port) = self.listen {
            writeln!(f, "  listen: \"127.0.0.1:{port}\"")?;
        }
        match &self.tls {
            Some(tls) => writeln!(f, "  tls: {{ {tls} }}")?,
            None => writeln!(f, "  insecure_plaintext: true")?,
        }
        if !self.limits.is_empty() {
            writeln!(f, "  limits: {{ {} }}", self.limits.join(", "))?;
        }
        f.write_str(&indented(&self.lines.join("\n"), 2))
    }
}

/// Where a provider finds its keys.
#[derive(Clone)]
enum Keys {
    JwksUrl(String),
    Discovery,
}

/// One item under `providers:`.
#[derive(Clone)]
pub struct Provider {
    name: String,
    issuer: String,
    keys: Keys,
    algorithms: String,
    audiences: String,
    lines: Vec<String>,
}

/// Provider `test`: trusts `issuer` for ES256 and audience `orders-api`, its JWKS over plain
/// HTTP, refetched at most once a second (`min_refresh: 1s`) and given 2 s per fetch.
pub fn provider(issuer: &Issuer) -> Provider {
    provider_at(&issuer.iss(), &issuer.jwks_url())
}

/// `provider`, for an issuer named `iss` with its JWKS at `jwks_url` and no server behind them.
pub fn provider_at(iss: &str, jwks_url: &str) -> Provider {
    Provider {
        name: "test".into(),
        issuer: iss.into(),
        keys: Keys::JwksUrl(jwks_url.into()),
        algorithms: "ES256".into(),
        audiences: quoted(&["orders-api"]),
        lines: Vec::new(),
    }
}

impl Provider {
    pub fn name(mut self, name: &str) -> Provider {
        self.name = name.into();
        self
    }

    /// The allow-list, as written between the brackets: `"RS256, ES256"`.
    pub fn algorithms(mut self, algorithms: &str) -> Provider {
        self.algorithms = algorithms.into();
        self
    }

    pub fn audiences(mut self, audiences: &[&str]) -> Provider {
        self.audiences = quoted(audiences);
        self
    }

    /// Keys from the issuer's OIDC discovery document instead of a `jwks_url`.
    pub fn discovery(mut self) -> Provider {
        self.keys = Keys::Discovery;
        self
    }

    /// Any other key of the provider, e.g. `clock_skew: 0s`.
    pub fn line(mut self, line: &str) -> Provider {
        self.lines.push(line.to_string());
        self
    }
}

impl Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  - name: {}", self.name)?;
        writeln!(f, "    issuer: \"{}\"", self.issuer)?;
        match &self.keys {
            Keys::JwksUrl(url) => writeln!(f, "    jwks_url: \"{url}\"")?,
            Keys::Discovery => writeln!(f, "    discovery: true")?,
        }
        writeln!(f, "    allow_insecure_jwks_http: true")?;
        writeln!(f, "    algorithms: [{}]", self.algorithms)?;
        writeln!(f, "    audiences: {}", self.audiences)?;
        writeln!(
            f,
            "    jwks: {{ min_refresh: 1s, refresh_interval: 5m, fetch_timeout: 2s }}"
        )?;
        f.write_str(&indented(&self.lines.join("\n"), 4))
    }
}

/// What a route asks of a request.
#[derive(Clone)]
enum Auth {
    Anonymous,
    Protected {
        providers: Option<String>,
        audience: Option<String>,
        require: Vec<String>,
        require_binding: Option<String>,
        /// Other `auth` keys, as written: `optional: true`, `token_from: [..]`.
        lines: Vec<String>,
    },
}

/// One item under `routes:`.
#[derive(Clone)]
pub struct Route {
    name: String,
    host: Option<String>,
    prefix: String,
    methods: Option<String>,
    strip_prefix: Option<String>,
    upstream: String,
    auth: Auth,
    forward_token: bool,
    assertion: Option<String>,
    forward_claims: Vec<(String, String)>,
    lines: Vec<String>,
}

fn route(name: &str, prefix: &str, upstream: &str, auth: Auth) -> Route {
    Route {
        name: name.into(),
        host: None,
        prefix: prefix.into(),
        methods: None,
        strip_prefix: None,
        upstream: upstream.into(),
        auth,
        forward_token: false,
        assertion: None,
        forward_claims: Vec::new(),
        lines: Vec::new(),
    }
}

/// `auth: anonymous` for requests under `prefix`, to `upstream`.
pub fn anonymous(name: &str, prefix: &str, upstream: &str) -> Route {
    route(name, prefix, upstream, Auth::Anonymous)
}

/// A route that wants a token from provider `test`, for requests under `prefix`, to `upstream`.
pub fn protected(name: &str, prefix: &str, upstream: &str) -> Route {
    let auth = Auth::Protected {
        providers: Some(quoted(&["test"])),
        audience: None,
        require: Vec::new(),
        require_binding: None,
        lines: Vec::new(),
    };
    route(name, prefix, upstream, auth)
}

impl Route {
    /// `match.host`: a name, or `*.suffix`.
    pub fn host(mut self, host: &str) -> Route {
        self.host = Some(host.into());
        self
    }

    /// `match.methods`, as written between the brackets: `"GET, HEAD"`.
    pub fn methods(mut self, methods: &str) -> Route {
        self.methods = Some(methods.into());
        self
    }

    pub fn upstream(mut self, upstream: &str) -> Route {
        self.upstream = upstream.into();
        self
    }

    /// No `upstream`: the route answers forward-auth decisions only.
    pub fn decisions_only(mut self) -> Route {
        self.upstream = String::new();
        self
    }

    pub fn strip_prefix(mut self, prefix: &str) -> Route {
        self.strip_prefix = Some(prefix.into());
        self
    }

    /// Any other key of the route, e.g. `upstream_protocol: http2`.
    pub fn line(mut self, line: &str) -> Route {
        self.lines.push(line.to_string());
        self
    }

    fn protected_auth(&mut self) -> (&mut Option<String>, &mut Option<String>, &mut Vec<String>) {
        match &mut self.auth {
            Auth::Protected {
                providers,
                audience,
                require,
                ..
            } => (providers, audience, require),
            Auth::Anonymous => panic!("route {}: an anonymous route has no auth rules", self.name),
        }
    }

    /// `auth.providers`; an empty list leaves the key out, so every provider may call.
    pub fn providers(mut self, names: &[&str]) -> Route {
        let providers = self.protected_auth().0;
        *providers = (!names.is_empty()).then(|| quoted(names));
        self
    }

    /// `auth.audience`: narrower than the provider's audiences.
    pub fn audience(mut self, audience: &str) -> Route {
        *self.protected_auth().1 = Some(audience.into());
        self
    }

    /// `auth.require_binding`: `none`, `dpop`, `mtls` or `any`.
    pub fn require_binding(mut self, binding: &str) -> Route {
        match &mut self.auth {
            Auth::Protected {
                require_binding, ..
            } => *require_binding = Some(binding.into()),
            Auth::Anonymous => panic!("route {}: an anonymous route binds nothing", self.name),
        }
        self
    }

    /// A rule: `claim` holds at least one of `values`.
    pub fn require_any(mut self, claim: &str, values: &[&str]) -> Route {
        let rule = format!("- claim: {claim}\n  any_of: {}", quoted(values));
        self.protected_auth().2.push(rule);
        self
    }

    /// A rule: `claim` holds every one of `values`.
    pub fn require_all(mut self, claim: &str, values: &[&str]) -> Route {
        let rule = format!("- claim: {claim}\n  all_of: {}", quoted(values));
        self.protected_auth().2.push(rule);
        self
    }

    /// Another `auth` key, e.g. `token_from: [header, "cookie:at"]` or `optional: true`.
    pub fn auth_line(mut self, line: &str) -> Route {
        match &mut self.auth {
            Auth::Protected { lines, .. } => lines.push(line.to_string()),
            Auth::Anonymous => panic!("route {}: an anonymous route has no auth keys", self.name),
        }
        self
    }

    /// Forwards claim `claim` (a dotted path) as header `header`.
    pub fn forward(mut self, claim: &str, header: &str) -> Route {
        self.forward_claims.push((claim.into(), header.into()));
        self
    }

    /// `forward.assertion`, as a flow map: `{header: X-Gateway-Assertion, ttl: 60s}`.
    pub fn assertion(mut self, flow: &str) -> Route {
        self.assertion = Some(flow.into());
        self
    }

    /// `forward.token: forward`: the upstream gets the `Authorization` header too.
    pub fn forward_token(mut self) -> Route {
        self.forward_token = true;
        self
    }
}

impl Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  - name: {}", self.name)?;
        let mut matcher = Vec::new();
        if let Some(host) = &self.host {
            matcher.push(format!("host: \"{host}\""));
        }
        matcher.push(format!("path_prefix: {}", self.prefix));
        if let Some(methods) = &self.methods {
            matcher.push(format!("methods: [{methods}]"));
        }
        writeln!(f, "    match: {{ {} }}", matcher.join(", "))?;
        if let Some(prefix) = &self.strip_prefix {
            writeln!(f, "    strip_prefix: {prefix}")?;
        }
        if !self.upstream.is_empty() {
            writeln!(f, "    upstream: \"{}\"", self.upstream)?;
        }
        for line in &self.lines {
            writeln!(f, "    {line}")?;
        }
        match &self.auth {
            Auth::Anonymous => writeln!(f, "    auth: anonymous")?,
            Auth::Protected {
                providers: None,
                audience: None,
                require,
                require_binding: None,
                lines,
            } if require.is_empty() && lines.is_empty() => writeln!(f, "    auth: {{}}")?,
            Auth::Protected {
                providers,
                audience,
                require,
                require_binding,
                lines,
            } => {
                writeln!(f, "    auth:")?;
                if let Some(providers) = providers {
                    writeln!(f, "      providers: {providers}")?;
                }
                if let Some(audience) = audience {
                    writeln!(f, "      audience: {audience}")?;
                }
                if let Some(binding) = require_binding {
                    writeln!(f, "      require_binding: {binding}")?;
                }
                if !require.is_empty() {
                    writeln!(f, "      require:")?;
                    f.write_str(&indented(&require.join("\n"), 8))?;
                }
                for line in lines {
                    writeln!(f, "      {line}")?;
                }
            }
        }
        if self.forward_token || !self.forward_claims.is_empty() || self.assertion.is_some() {
            writeln!(f, "    forward:")?;
            if let Some(assertion) = &self.assertion {
                writeln!(f, "      assertion: {assertion}")?;
            }
            if self.forward_token {
                writeln!(f, "      token: forward")?;
            }
            if !self.forward_claims.is_empty() {
                writeln!(f, "      claims:")?;
                for (claim, header) in &self.forward_claims {
                    writeln!(f, "        {claim}: {header}")?;
                }
            }
        }
        Ok(())
    }
}

/// A whole gateway.yaml. Adding a provider or route whose name is taken replaces that one in
/// place, so a shared shape can be varied one part at a time.
#[derive(Clone)]
pub struct Config {
    server: Server,
    admin: Vec<String>,
    sections: Vec<String>,
    providers: Vec<Provider>,
    routes: Vec<Route>,
    revocation: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

impl Config {
    /// A plaintext server and nothing else yet.
    pub fn new() -> Config {
        Config {
            server: server(),
            admin: Vec::new(),
            sections: Vec::new(),
            providers: Vec::new(),
            routes: Vec::new(),
            revocation: Vec::new(),
        }
    }

    pub fn server(mut self, server: Server) -> Config {
        self.server = server;
        self
    }

    /// Changes the server section in place.
    pub fn edit_server(mut self, edit: impl FnOnce(Server) -> Server) -> Config {
        self.server = edit(self.server);
        self
    }

    /// A key of the `admin:` section, e.g. `token_env: ADMIN_TOKEN`.
    pub fn admin(mut self, line: &str) -> Config {
        self.admin.push(line.to_string());
        self
    }

    /// Another top-level section, written whole: `log: { level: info, format: json }`.
    pub fn section(mut self, yaml: &str) -> Config {
        self.sections.push(yaml.to_string());
        self
    }

    /// Changes provider `name` in place.
    pub fn edit_provider(mut self, name: &str, edit: impl FnOnce(Provider) -> Provider) -> Config {
        edit_named(&mut self.providers, name, |p| &p.name, edit);
        self
    }

    /// Changes route `name` in place.
    pub fn edit_route(mut self, name: &str, edit: impl FnOnce(Route) -> Route) -> Config {
        edit_named(&mut self.routes, name, |r| &r.name, edit);
        self
    }

    /// Adds `provider`, or replaces the one of its name.
    pub fn provider(mut self, provider: Provider) -> Config {
        put_named(&mut self.providers, provider, |p| &p.name);
        self
    }

    /// Adds `route` after the others, or replaces the one of its name where it stands.
    pub fn route(mut self, route: Route) -> Config {
        put_named(&mut self.routes, route, |r| &r.name);
        self
    }

    /// A key of the `revocation:` section, e.g. `backend: memory`.
    pub fn revocation(mut self, line: &str) -> Config {
        self.revocation.push(line.to_string());
        self
    }

    pub fn yaml(&self) -> String {
        self.to_string()
    }
}

fn edit_named<T>(
    items: &mut Vec<T>,
    name: &str,
    name_of: impl Fn(&T) -> &String,
    edit: impl FnOnce(T) -> T,
) {
    let i = items
        .iter()
        .position(|item| name_of(item) == name)
        .unwrap_or_else(|| panic!("no {name} to edit"));
    let item = items.remove(i);
    items.insert(i, edit(item));
}

fn put_named<T>(items: &mut Vec<T>, item: T, name_of: impl Fn(&T) -> &String) {
    match items.iter().position(|i| name_of(i) == name_of(&item)) {
        Some(i) => items[i] = item,
        None => items.push(item),
    }
}

impl Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.server)?;
        if !self.admin.is_empty() {
            writeln!(f, "admin:")?;
            f.write_str(&indented(&self.admin.join("\n"), 2))?;
        }
        for section in &self.sections {
            f.write_str(&indented(section, 0))?;
        }
        if !self.providers.is_empty() {
            writeln!(f, "providers:")?;
            for p in &self.providers {
                write!(f, "{p}")?;
            }
        }
        writeln!(f, "routes:")?;
        for r in &self.routes {
            write!(f, "{r}")?;
        }
        if !self.revocation.is_empty() {
            writeln!(f, "revocation:")?;
            f.write_str(&indented(&self.revocation.join("\n"), 2))?;
        }
        Ok(())
    }
}

/// Provider `test` trusting `issuer`, `/public` anonymous and `/api` behind `test` with no
/// further rule, both to `upstream`, over plaintext.
pub fn public_and_api(issuer: &Issuer, upstream: &Upstream) -> Config {
    let up = upstream.url();
    Config::new()
        .provider(provider(issuer))
        .route(anonymous("public", "/public", &up))
        .route(protected("api", "/api", &up))
}

/// `public_and_api`, with `/api` wanting realm role `orders.read` and forwarding `sub` as
/// `X-Auth-Subject` and the roles as `X-Auth-Roles`.
pub fn basic(issuer: &Issuer, upstream: &Upstream) -> Config {
    public_and_api(issuer, upstream).route(
        protected("api", "/api", &upstream.url())
            .require_any("realm_access.roles", &["orders.read"])
            .forward("sub", "X-Auth-Subject")
            .forward("realm_access.roles", "X-Auth-Roles"),
    )
}

/// A route for each kind of rule, provider `test` trusting `issuer` (audiences `orders-api` and
/// `billing-api`, `exp`, `iat` and `sub` required, 30 s of clock skew), all to `upstream`:
/// `/public` anonymous; `/api` needs role `orders.read` or `admin` and forwards identity claims;
/// `/scoped` needs scope `orders:read`; `/billing` narrows the audience to `billing-api`;
/// `/fwd` forwards the Authorization header. `/scoped` and `/billing` name no provider.
pub fn every_rule(issuer: &Issuer, upstream: &Upstream) -> Config {
    let up = upstream.url();
    Config::new()
        .provider(
            provider(issuer)
                .audiences(&["orders-api", "billing-api"])
                .line("require_claims: [exp, iat, sub]")
                .line("clock_skew: 30s"),
        )
        .route(anonymous("public", "/public", &up))
        .route(
            protected("api", "/api", &up)
                .require_any("realm_access.roles", &["orders.read", "admin"])
                .forward("sub", "X-Auth-Subject")
                .forward("realm_access.roles", "X-Auth-Roles")
                .forward("groups", "X-Auth-Groups")
                .forward("n", "X-Auth-N")
                .forward("flag", "X-Auth-Flag")
                .forward("obj", "X-Auth-Obj"),
        )
        .route(
            protected("scoped", "/scoped", &up)
                .providers(&[])
                .require_all("scope", &["orders:read"]),
        )
        .route(
            protected("billing", "/billing", &up)
                .providers(&[])
                .audience("billing-api"),
        )
        .route(
            protected("fwd", "/fwd", &up)
                .forward_token()
                .forward("sub", "X-Auth-Subject"),
        )
}

/// Sets a fresh environment variable to `value` and returns its name: for `shared_secret_env`
/// and `token_env`, which name a variable rather than hold the secret.
pub fn secret_env(value: &str) -> String {
    let name = format!(
        "JWTGW_TEST_SECRET_{}",
        super::keys::random_id().replace(['-', '_'], "X")
    );
    std::env::set_var(&name, value);
    name
}
