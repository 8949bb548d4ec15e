//! Process signals mapped onto a cancellation token.
//!
//! The first SIGINT/SIGTERM cancels the token: libraries stop taking new work and finish or
//! hand back what is in flight. A second signal exits at once, for when that takes too long.

use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGINT or SIGTERM; the second one exits the process.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work (signal again to force)");
        child.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
