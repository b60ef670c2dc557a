//! The cluster's JetStream key-value buckets (retained messages, the client registry, the
//! HTTP API's idempotency keys), opened or made the same way.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a node waits at start for a NATS that has JetStream to answer its set-up.
const JETSTREAM_WAIT: Duration = Duration::from_secs(60);

/// Runs a JetStream set-up step (a bucket, the stream). When it fails while the NATS server
/// has JetStream (a NATS cluster electing its leaders, a server restarting), it is tried
/// again every second for up to a minute, then fails: a node does not run without the
/// cluster's stream and buckets because JetStream was slow for a moment. `Ok(None)`: the
/// server has no JetStream (the node runs without what needs it, and says so).
pub async fn set_up<T, F, Fut>(
    client: &async_nats::Client,
    what: &str,
    mut step: F,
) -> Result<Option<T>, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + JETSTREAM_WAIT;
    let mut said = false;
    loop {
        match step().await {
            Ok(done) => return Ok(Some(done)),
            Err(e) if !client.server_info().jetstream => {
                tracing::warn!(what, error = %e, "NATS has no JetStream");
                return Ok(None);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "{what}: JetStream did not answer within a minute: {e}"
                ));
            }
            Err(e) => {
                if !said {
                    tracing::warn!(what, error = %e, "JetStream does not answer yet: trying again");
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Opens the bucket `name`, or makes it: one value per key, `replicas` copies, each value
/// kept `max_age` at most (`None`: until replaced or deleted); `direct`: any replica may
/// answer a read (faster, but a follower may answer with a value a write has replaced). Its stream is made here with
/// the settings a key-value bucket has (async-nats's own `create_key_value` first reads the
/// account's limits, which NATS 2.9 answers without fields that client requires).
pub async fn bucket(
    client: &async_nats::Client,
    name: &str,
    description: &str,
    replicas: usize,
    max_age: Option<Duration>,
    direct: bool,
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
        allow_direct: direct,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    js.get_key_value(name).await.map_err(|e| e.to_string())
}
