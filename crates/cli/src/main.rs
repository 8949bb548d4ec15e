//! `prefect-aci`: the thin binary edge.
//!
//! Each subcommand lives in its own module that parses raw flags (clap), turns them into a
//! validated library `Config`, and calls the library's `run(config, shutdown)`. Only this crate
//! uses `anyhow`; libraries return typed errors. Errors print as `prefect-aci: {err:#}` and the
//! process exits with 1 (runtime failure) or 2 (bad usage, from clap).

mod emulator_cmd;
mod logging;
mod pool_cmd;
mod setup_cmd;
mod shutdown;
mod worker_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run Prefect flows on Azure Container Instances.
#[derive(Debug, Parser)]
#[command(name = "prefect-aci", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    logging: logging::LoggingArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start or manage the worker.
    #[command(subcommand)]
    Worker(worker_cmd::WorkerCommand),
    /// Work pools of type `azure-container-instance`.
    #[command(subcommand)]
    Pool(pool_cmd::PoolCommand),
    /// Serve the local ARM/ACI emulator.
    Emulator(emulator_cmd::EmulatorArgs),
    /// Create (or update) everything an ACI work pool needs: the guide's steps, idempotent.
    Setup(setup_cmd::SetupArgs),
    /// Remove what `setup` created for a pool (found by its tags), and nothing else.
    Teardown(setup_cmd::TeardownArgs),
}

/// Caps glibc's malloc arenas at two unless `MALLOC_ARENA_MAX` says otherwise.
///
/// glibc gives every thread that allocates under contention its own arena (up to 8 per core)
/// and keeps freed memory in each. A worker watching a thousand runs allocates on every
/// runtime and resolver thread; with one arena per thread its resident memory grows with the
/// thread count, not with the work. Two arenas cost nothing measurable in CPU here
/// (bench/RESULTS.md).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; called first thing in main, before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    logging::init(&cli.logging);
    // rustls needs one process-wide crypto provider; ring keeps the build light.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("prefect-aci: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Worker(cmd) => worker_cmd::run(cmd).await,
            Command::Pool(cmd) => pool_cmd::run(cmd).await,
            Command::Emulator(args) => emulator_cmd::run(args).await,
            Command::Setup(args) => setup_cmd::setup(args).await,
            Command::Teardown(args) => setup_cmd::teardown(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("prefect-aci: {err:#}");
            ExitCode::FAILURE
        }
    }
}
