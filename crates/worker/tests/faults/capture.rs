//! Everything the worker logs, kept in memory so scenarios can search it for secret values.
//!
//! One global `tracing` subscriber for the whole test binary, at debug level for our crates
//! (the level at which request details would leak if anything did), writing into a buffer.
//! Parallel scenarios share it; each searches for its own secrets, so sharing is harmless.
//! Each line is also printed into the emitting test's captured output, which libtest shows
//! when that test fails.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: OnceLock<()> = OnceLock::new();

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BUFFER
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        // Also into the running test's captured output, shown when that test fails.
        print!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the capturing subscriber (once per test binary).
pub fn init() {
    INIT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let filter = tracing_subscriber::EnvFilter::new(
            "info,prefect_aci_worker=debug,azure_arm=debug,prefect_client=debug",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
    });
}

/// Everything captured so far.
pub fn contents() -> String {
    String::from_utf8_lossy(&BUFFER.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
