use std::process::ExitCode;

/// See Cargo.toml: the allocator is the binary's choice, not the library's (tests and benches
/// keep the system one).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    jwt_gateway::cli::main()
}
