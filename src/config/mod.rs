//! The gateway's configuration, parsed once from `gateway.yaml` into checked types.
//!
//! Everything downstream works with these types: no string lookups, no re-validation, no YAML.
//! `load` returns every problem at once, each naming its YAML path, so an operator fixes a broken
//! file in one pass instead of one error per restart.

mod compile;
mod duration;
mod yaml;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, Uri};
use ipnet::IpNet;

pub use compile::compile_str;
pub use duration::parse_duration;

use crate::algorithm::{Algorithm, AlgorithmSet};
use crate::claims::ClaimPath;
pub use crate::path::PathPolicy;
use crate::rules::Requirement;

/// One problem in the configuration, located by its YAML path (`routes[2].auth.require[0].claim`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has {} error(s):\n{}", .path.display(), .errors.len(), render_errors(.errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<ConfigError>,
    },
}

fn render_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and compiles a config file; relative file paths inside it resolve against its folder.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    compile_str(&text, base).map_err(|errors| LoadError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}

#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub token_cache: TokenCacheConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub providers: Vec<Arc<ProviderConfig>>,
    pub routes: Vec<RouteConfig>,
    pub revocation: RevocationConfig,
    /// Roots trusted for `https://` upstreams instead of the platform's (`upstream_tls.ca_file`).
    pub upstream_tls: Option<UpstreamTls>,
    /// The decision listener for proxies that keep their own routing (`forward_auth:`).
    pub forward_auth: Option<ForwardAuthConfig>,
    /// W3C Trace Context and OTLP span export (`tracing:`).
    pub tracing: TracingConfig,
    /// The gateway's own signing key for `forward.assertion` (`assertion:`).
    pub assertion: Option<AssertionConfig>,
    /// Advice that does not stop the gateway (`check` prints it, `run` logs it).
    pub warnings: Vec<ConfigError>,
}

/// `tracing:`. Without `otlp_endpoint` the gateway takes no part in tracing and passes
/// `traceparent`/`tracestate` on untouched.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingConfig {
    /// `<otlp_endpoint>/v1/traces`, where batches of spans are POSTed.
    pub traces_url: Option<reqwest::Url>,
    /// Head sampling of new traces, 0 to 1; a parent's own decision always stands.
    pub sample_ratio: f64,
    /// How long one batch's POST may take before it counts as failed.
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            traces_url: None,
            sample_ratio: 0.01,
            // OpenTelemetry's default for one OTLP export.
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// `assertion:`: who the gateway says it is and the key it signs assertions with, read (and
/// re-read on every reload) when the config is compiled.
#[derive(Clone, Debug)]
pub struct AssertionConfig {
    pub issuer: String,
    pub signing_key_file: PathBuf,
    pub key: Arc<crate::signing_key::AssertionKey>,
}

/// `routes[].forward.assertion`: a JWT signed by the gateway, sent upstream in `header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionForward {
    pub header: HeaderName,
    pub ttl: Duration,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    pub path: PathPolicy,
    pub headers_with_underscores: UnderscoreHeaders,
    /// RFC 9728 protected-resource metadata, served on the public listener.
    pub resource_metadata: Option<ResourceMetadata>,
}

/// `server.resource_metadata`, with what serving it needs rendered at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceMetadata {
    /// `/.well-known/oauth-protected-resource` and the resource's path, if any (RFC 9728 3.1).
    pub path: String,
    /// That path on the resource's origin, for `resource_metadata=` in every challenge.
    pub url: String,
    /// The metadata document.
    pub json: String,
}

/// What happens to a request header whose name holds `_` (`server.headers_with_underscores`).
/// CGI-style upstreams read `X_Auth_Subject` and `X-Auth-Subject` as the same variable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Removed before forwarding, like nginx's default.
    #[default]
    Drop,
    /// The request is refused with 400.
    Reject,
    /// Forwarded, except names that equal a header the gateway owns once `_` reads as `-`.
    Allow,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub hsts_max_age: Option<Duration>,
    /// Client certificates (`tls.client_auth`), for mTLS-bound tokens (RFC 8705).
    pub client_auth: Option<ClientAuth>,
}

/// `server.tls.client_auth`: which client certificates the listener asks for and trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    pub mode: ClientAuthMode,
    /// PEM roots a client certificate must chain to; re-read with the server certificate.
    pub ca_file: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A client may present a certificate (verified if it does) or none.
    #[default]
    Optional,
    /// A handshake without a verified client certificate fails.
    Required,
}

/// A provider's `dpop:` section: its tokens may be bound to a client key (RFC 9449).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopConfig {
    /// How old a proof's `iat` may be (plus `clock_skew`); also how long its `jti` is remembered.
    pub max_age: Duration,
    pub replay: ReplayStore,
    /// The algorithms a proof may be signed with: the provider's asymmetric ones.
    pub algorithms: AlgorithmSet,
}

/// Where the `jti`s of accepted proofs are remembered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplayStore {
    /// In this instance, bounded.
    #[default]
    Memory,
    /// In the revocation Redis, shared by the fleet at once.
    Redis,
}

/// `routes[].auth.require_binding`: which sender-constrained tokens a route insists on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequireBinding {
    /// Bound tokens are checked when they come; unbound ones pass too.
    #[default]
    None,
    Dpop,
    Mtls,
    /// DPoP or mTLS, either will do.
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_token_bytes: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub auth_failures_per_minute: Option<u32>,
    /// An idle keep-alive connection (HTTP/2: one with no open stream) is closed after this; a
    /// request or response body that moves no byte for this long is aborted.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16_384,
            max_token_bytes: 8_192,
            max_body_bytes: 10_485_760,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            max_concurrent_streams: 256,
            auth_failures_per_minute: None,
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 512,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCacheConfig {
    pub max_entries: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Serve the admin listener over TLS (`admin.tls`); required off loopback in the manifests.
    pub tls: Option<CertFiles>,
    /// The Bearer secret for mutating admin calls, read from `admin.token_env` at load.
    pub token: Option<Secret>,
}

/// A PEM certificate chain and its private key, as `admin.tls` and `forward_auth.tls` name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Bytes that must never reach a log line or a debug dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeysSource {
    JwksUrl(reqwest::Url),
    /// `{issuer}/.well-known/openid-configuration`, whose `jwks_uri` is then fetched.
    Discovery(reqwest::Url),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksSettings {
    pub refresh_interval: Duration,
    pub min_refresh: Duration,
    pub max_stale: Duration,
    pub fetch_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderConfig {
    pub name: String,
    pub issuer: String,
    pub keys: Option<KeysSource>,
    pub algorithms: Vec<Algorithm>,
    pub shared_secret: Option<Secret>,
    pub audiences: Vec<String>,
    pub clock_skew: Duration,
    pub require_claims: Vec<ClaimPath>,
    pub require_typ: Option<String>,
    pub jwks: JwksSettings,
    pub allow_insecure_jwks_http: bool,
    /// DPoP-bound tokens of this provider are accepted (with a proof) only with this section.
    pub dpop: Option<DpopConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
}

impl HostMatch {
    /// `host` is already lower-cased and stripped of its port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub uri: Uri,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Prepended to the forwarded path; empty or starting with `/`, never ending with `/`.
    pub base_path: String,
    /// The `Host` the upstream receives, rendered once here instead of on every request.
    pub host_header: http::HeaderValue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    pub listen: SocketAddr,
    /// TLS for the decision listener; plaintext HTTP/1.1 and h2c without it.
    pub tls: Option<CertFiles>,
    /// Who may ask for decisions; loopback only by default.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    pub ca_file: PathBuf,
}

/// How a route talks to its upstream (`routes[].upstream_protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `https://`: ALPN picks `h2` or `http/1.1`; `http://`: HTTP/1.1.
    #[default]
    Auto,
    Http1,
    /// `https://`: ALPN `h2` only; `http://`: h2c with prior knowledge.
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenForwarding {
    Strip,
    Forward,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: ClaimPath,
    pub header: HeaderName,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedAuth {
    /// Indexes into `Config::providers`.
    pub providers: Vec<usize>,
    pub audience: Option<String>,
    pub require: Vec<Requirement>,
    pub require_binding: RequireBinding,
    /// `auth.optional`: a request without a token passes anonymously.
    pub optional: bool,
    /// Where the token may come from (`auth.token_from`); at most one may be present.
    pub token_from: Vec<TokenSource>,
}

/// One place a token may arrive in (`auth.token_from`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    Header,
    /// A cookie of this name.
    Cookie(String),
    /// A query parameter of this name.
    Query(String),
}

/// `routes[].cors`, answered by the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    pub allow_origins: AllowedOrigins,
    /// `Access-Control-Allow-Methods` and `-Headers` of a preflight answer, rendered at load.
    pub allow_methods: http::HeaderValue,
    pub allow_headers: Option<http::HeaderValue>,
    pub expose_headers: Option<http::HeaderValue>,
    pub allow_credentials: bool,
    pub max_age: Option<http::HeaderValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    /// Serialized origins (`https://app.example.com`), compared exactly, case-insensitively.
    List(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAuth {
    Anonymous,
    Protected(ProtectedAuth),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub methods: Option<Vec<Method>>,
    /// `None`: the route only answers forward-auth decisions; proxied requests matching it are 404.
    pub upstream: Option<Upstream>,
    pub upstream_protocol: UpstreamProtocol,
    pub strip_prefix: Option<String>,
    pub auth: RouteAuth,
    pub cors: Option<CorsConfig>,
    pub forward_claims: Vec<ClaimHeader>,
    pub forward_token: TokenForwarding,
    pub assertion: Option<AssertionForward>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationConfig {
    Memory { file: Option<PathBuf> },
    Redis { url: String },
}

impl Config {
    pub fn provider_index(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == name)
    }
}
