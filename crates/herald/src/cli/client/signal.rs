//! Ctrl-C (SIGINT) and SIGTERM, as one signal every wait of the clients selects on: a
//! connection attempt, a backoff wait and a connected loop all end on it, and the client
//! then disconnects cleanly (MQTT 5: reason 0x00, so the will is not published).

use tokio::sync::watch;

/// Raised once, at the first Ctrl-C or SIGTERM.
#[derive(Debug, Clone)]
pub(super) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Starts listening (inside the runtime).
    pub(super) fn listen() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let term = async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        term.recv().await;
                    }
                    // Without a SIGTERM handler, SIGTERM keeps its default action.
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Waits for the signal. Cancel-safe.
    pub(super) async fn wait(&mut self) {
        // An error means the listening task is gone without raising: never.
        if self.0.wait_for(|raised| *raised).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
