//! Retained messages cluster-wide: a JetStream key-value bucket (`<prefix>-retained`, one
//! value per tenant and topic, the last only) that every node writes the retained messages
//! set on it to, and whose changes every node applies, in the bucket's one order, its own
//! included: so that two nodes setting the same topic at once end with the same message
//! everywhere. A node that joins reads the bucket's current values first, so a subscriber
//! on any node gets what was retained on any other. Without JetStream on the NATS servers,
//! retained messages stay with the nodes that saw them (logged at start).

use std::sync::{Arc, Weak};

use data_encoding::BASE64URL_NOPAD;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Cluster;
use super::wire::Envelope;
use crate::broker::Broker;
use crate::broker::durable::{instant_of, unix_ms, unix_ms_of};
use crate::broker::message::Message;

/// A retained change waiting to be written: its key, and the envelope (`None`: a deletion).
pub(super) type Change = (String, Option<Vec<u8>>);

/// Retained changes waiting for the bucket at most; past it one is dropped and counted.
pub(super) const QUEUE: usize = 16 * 1024;

/// The bucket's key for `topic` of `tenant`: each in base64url (the key alphabet is
/// narrow), the default tenant as `=`.
pub fn key(tenant: &str, topic: &str) -> String {
    let tenant = match tenant {
        "" => "=".to_string(),
        t => BASE64URL_NOPAD.encode(t.as_bytes()),
    };
    format!("{tenant}.{}", BASE64URL_NOPAD.encode(topic.as_bytes()))
}

/// The tenant and topic a key names.
pub fn parse_key(key: &str) -> Option<(String, String)> {
    let (tenant, topic) = key.split_once('.')?;
    let tenant = match tenant {
        "=" => String::new(),
        t => String::from_utf8(BASE64URL_NOPAD.decode(t.as_bytes()).ok()?).ok()?,
    };
    let topic = String::from_utf8(BASE64URL_NOPAD.decode(topic.as_bytes()).ok()?).ok()?;
    (!topic.is_empty()).then_some((tenant, topic))
}

/// Opens (or creates) the bucket.
pub(super) async fn bucket(
    client: &async_nats::Client,
    prefix: &str,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, String> {
    let name = format!("{}-retained", prefix.replace('.', "_"));
    let about = "Herald: retained messages, by tenant and topic";
    super::kv::bucket(client, &name, about, replicas, None, true).await
}

impl Cluster {
    /// Queues a retained message set here (empty payload: deleted) for the bucket.
    pub(super) fn put_retained(&self, tenant: &str, message: &Message) {
        let Some(tx) = &self.retained else {
            return;
        };
        let key = key(tenant, &message.topic);
        let value = if message.payload.is_empty() {
            None
        } else {
            let mut publish = message.as_published();
            publish.retain = true;
            match Envelope::encode(&self.node, None, unix_ms_of(message.received_at), publish) {
                Some(bytes) => Some(bytes),
                None => {
                    self.stats
                        .retained_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        };
        if tx.try_send((key, value)).is_err() {
            self.stats
                .retained_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Writes the queued changes to the bucket, in order.
pub(super) async fn write(
    cluster: Arc<Cluster>,
    store: async_nats::jetstream::kv::Store,
    mut rx: mpsc::Receiver<Change>,
) {
    while let Some((key, value)) = rx.recv().await {
        let done = match value {
            Some(bytes) => store
                .put(&key, bytes.into())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => store.delete(&key).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "a retained message was not written to the cluster");
            cluster
                .stats
                .retained_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Applies every change of the bucket here: its current values first, then each change as
/// it is made.
pub(super) async fn follow(
    cluster: Arc<Cluster>,
    broker: Weak<Broker>,
    store: async_nats::jetstream::kv::Store,
) {
    let mut changes = match store.watch_with_history(">").await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the cluster's retained messages");
            return;
        }
    };
    while let Some(change) = changes.next().await {
        let Ok(entry) = change else { continue };
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let Some((tenant, topic)) = parse_key(&entry.key) else {
            continue;
        };
        let message = match entry.operation {
            async_nats::jetstream::kv::Operation::Put => match Envelope::decode(&entry.value) {
                Ok(e) => Message::restored(
                    e.publish,
                    instant_of(e.received_ms, unix_ms()),
                    super::REMOTE_ORIGIN,
                ),
                Err(_) => continue,
            },
            _ => {
                let mut empty = mqtt_codec::Publish::new(topic.as_str(), Vec::new());
                empty.retain = true;
                Message::restored(empty, std::time::Instant::now(), super::REMOTE_ORIGIN)
            }
        };
        let tenant = broker.tenant(&tenant);
        broker.retained_from_peer(&tenant, &Arc::new(message));
        cluster
            .stats
            .retained_applied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back() {
        for (tenant, topic) in [("", "a/b"), ("acme", "x y/.*>~"), ("t", "/")] {
            let k = key(tenant, topic);
            assert!(
                k.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_=.".contains(&c)),
                "{k}"
            );
            assert_eq!(parse_key(&k), Some((tenant.to_string(), topic.to_string())));
        }
        assert_eq!(parse_key("nodot"), None);
        assert_eq!(parse_key("=."), None);
    }
}
