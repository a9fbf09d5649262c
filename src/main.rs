use std::process::ExitCode;

fn main() -> ExitCode {
    jwt_gateway::cli::main()
}
