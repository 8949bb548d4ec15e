//! Logging setup: human-readable by default, JSON lines with `--log-format json`.

use tracing_subscriber::EnvFilter;

/// Global logging flags.
#[derive(Debug, clap::Args)]
pub struct LoggingArgs {
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PREFECT_ACI_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

pub fn init(args: &LoggingArgs) {
    // PREFECT_ACI_LOG wins; otherwise follow Prefect's logging level variable.
    let filter = EnvFilter::try_from_env("PREFECT_ACI_LOG").unwrap_or_else(|_| {
        let level = std::env::var("PREFECT_LOGGING_LEVEL").unwrap_or_else(|_| "info".into());
        EnvFilter::new(format!("warn,prefect_aci={0},prefect_aci_worker={0},prefect_client={0},azure_arm={0},aci_emulator={0}", level.to_lowercase()))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
