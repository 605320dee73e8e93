//! This host's notifications: `wasmroom_host_{id}` (another host asks for a document
//! this one holds) and `wasmroom_plugins` (a new version was deployed), on a connection
//! of its own, turned into [`StoreEvent`]s. A notification sent while the connection
//! was down is lost; the askers repeat theirs while they wait, and a reconnection
//! rechecks every plugin.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use crate::store::StoreEvent;
use crate::store::postgres::{Inner, StoreError};

/// Listens until the store's thread stops, reconnecting when the connection drops or
/// this host registers anew.
pub(super) async fn run(inner: Arc<Inner>) {
    loop {
        if let Err(e) = listen(&inner).await {
            tracing::debug!("store notifications: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen(inner: &Inner) -> Result<(), StoreError> {
    let holder = inner.clock.holder();
    let (client, mut connection) = inner
        .target
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| StoreError::Connect {
            target: inner.target.to_string(),
            reason: crate::store::postgres::error_text(&e),
        })?;
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN wasmroom_host_{holder}; LISTEN wasmroom_plugins"
        ))
        .await
        .map_err(StoreError::query)?;
    // Deploys may have happened while nobody listened.
    let _ = inner.events.send(StoreEvent::PluginsChanged).await;
    let result = loop {
        tokio::select! {
            next = notifications.recv() => match next {
                Some((channel, payload)) => {
                    if let Some(event) = inner.event(&channel, &payload) {
                        // The asker repeats its request while it waits: one dropped in
                        // a burst is asked for again. The rest wait for room.
                        let queued = match event {
                            StoreEvent::ReleaseRequested { .. } => {
                                inner.events.try_send(event).is_ok()
                            }
                            event => inner.events.send(event).await.is_ok(),
                        };
                        if !queued {
                            tracing::debug!("store event dropped: too many queued");
                        }
                    }
                }
                None => break Err(StoreError::Query("the notification connection closed".into())),
            },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if inner.clock.holder() != holder {
                    break Ok(());
                }
            }
        }
    };
    driver.abort();
    result
}
