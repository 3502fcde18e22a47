//! The wake-up listener: one connection per server process with `LISTEN recordhook`,
//! republishing each notified handler name to [`Store::wake_ups`](crate::store::Store::wake_ups)
//! subscribers. It reconnects after failures; notifications sent while it was away are
//! lost, which only delays work until the next poll.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

/// The notification channel (the ingest, release and replay statements name it too).
const CHANNEL: &str = "recordhook";
/// Wait between attempts to (re)open the connection.
const RETRY: Duration = Duration::from_secs(1);

/// Holds a `LISTEN` connection for as long as the store lives, reconnecting after
/// failures, and republishes each notified handler name.
pub(super) async fn run(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    wake: broadcast::Sender<String>,
    stop: CancellationToken,
) {
    let mut reported = false;
    loop {
        let attempt = async {
            let (client, mut connection) = config.connect(tls.clone()).await?;
            // The connection must be polled for the LISTEN below to complete, and it is
            // what yields the notifications: drive it here, forwarding them.
            let wake = wake.clone();
            let driver = async move {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = message? {
                        // No subscriber yet is fine.
                        let _ = wake.send(n.payload().to_owned());
                    }
                }
                Ok::<(), tokio_postgres::Error>(())
            };
            let driving = tokio::spawn(driver);
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            tracing::debug!("listening for wake-ups");
            let ended = driving.await;
            drop(client);
            match ended {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Err(e) if !reported => {
                tracing::warn!(error = %e, "wake-up listener lost its connection; reconnecting (polling meanwhile)");
                reported = true;
            }
            Err(_) => {}
            Ok(()) => reported = false,
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
