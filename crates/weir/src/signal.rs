//! Shutdown on Ctrl-C or SIGTERM, for the long-running subcommands.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` at the first Ctrl-C or SIGTERM, saying so as `who`.
pub(crate) async fn stop_on_signal(who: &'static str, shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    // Cancel first: a closed stderr must not swallow the signal.
    shutdown.cancel();
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{who}: shutting down");
}
