//! The command line: `run` (default), `check` (with `--request` to explain a decision), `demo`.
//! Each command maps its failure to the contract's exit code: 1 for config, 2 for runtime.

mod check;
mod explain;
mod revoke;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::LoadError;

#[derive(Parser, Debug)]
#[command(
    name = "jwt-gateway",
    version,
    about = "A JWT-validating reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file.
    #[arg(
        short = 'c',
        long = "config",
        env = "JWT_GATEWAY_CONFIG",
        default_value = "gateway.yaml",
        global = true
    )]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the configuration and print the route table, or explain one request offline.
    Check {
        /// A request to explain, e.g. 'GET https://api.example.com/orders/7'.
        #[arg(long)]
        request: Option<String>,
        /// The bearer token the request would carry.
        #[arg(long, requires = "request")]
        token: Option<String>,
        /// A further request header, 'Name: value' (repeatable).
        #[arg(long = "header", requires = "request")]
        headers: Vec<String>,
    },
    /// Add, list and remove revocations through the admin API.
    Revoke {
        /// Admin API base URL (default: http:// + admin.listen from the config).
        #[arg(long)]
        admin: Option<String>,
        /// Environment variable holding the admin token (default: admin.token_env from the config).
        #[arg(long)]
        token_env: Option<String>,
        #[command(subcommand)]
        command: revoke::RevokeCommand,
    },
    /// Start a self-contained stack on loopback (demo issuer, echo upstream, this gateway.yaml).
    Demo,
}

/// A command's failure, carrying its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

impl From<crate::demo::DemoError> for CliError {
    fn from(e: crate::demo::DemoError) -> Self {
        match e {
            crate::demo::DemoError::Config(e) => CliError::Config(e),
            crate::demo::DemoError::Runtime(why) => CliError::Runtime(why),
        }
    }
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 1,
            CliError::Runtime(_) => 2,
        }
    }
}

pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::run(&cli.config),
        Command::Check { request: None, .. } => check::check(&cli.config),
        Command::Check {
            request: Some(request),
            token,
            headers,
        } => explain::explain(&cli.config, &request, token.as_deref(), &headers),
        Command::Revoke {
            admin,
            token_env,
            command,
        } => revoke::revoke(&cli.config, admin.as_deref(), token_env.as_deref(), command),
        Command::Demo => crate::demo::run(&cli.config, run::shutdown_signal()).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The async runtime: one worker per CPU the process may use (affinity and cgroup quota
/// included). With a single CPU, the current-thread scheduler does the same work without the
/// work-stealing machinery's atomics and cross-thread wake-ups. Failing to build one is a
/// runtime failure.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start the async runtime: {e}")))
}
