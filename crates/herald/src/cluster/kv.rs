//! The cluster's JetStream key-value buckets (retained messages, the client registry, the
//! HTTP API's idempotency keys), opened or made the same way.

use std::time::Duration;

/// Opens the bucket `name`, or makes it: one value per key, `replicas` copies, each value
/// kept `max_age` at most (`None`: until replaced or deleted). Its stream is made here with
/// the settings a key-value bucket has (async-nats's own `create_key_value` first reads the
/// account's limits, which NATS 2.9 answers without fields that client requires).
pub async fn bucket(
    client: &async_nats::Client,
    name: &str,
    description: &str,
    replicas: usize,
    max_age: Option<Duration>,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::stream;
    let js = async_nats::jetstream::new(client.clone());
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: max_age.unwrap_or_default(),
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    js.get_key_value(name).await.map_err(|e| e.to_string())
}
