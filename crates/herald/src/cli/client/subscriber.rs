//! `herald sub`: connect, subscribe (unless the resumed session already holds the
//! subscriptions), print each message and only then acknowledge it; on a lost connection
//! reconnect and resume.

use std::time::Duration;

use anyhow::{Context, bail};
use mqtt_codec::{
    Packet, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    Subscription, SubscriptionOptions, topic,
};
use tokio::time::{Instant, sleep_until};

use super::args::SubArgs;
use super::inbound::Inbound;
use super::link::{Link, Lost};
use super::log::Log;
use super::options::Options;
use super::output::{Format, Output};
use super::reconnect::Reconnector;
use super::signal::Shutdown;

/// How `herald sub` ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// `-C` reached, `--retained-only` done, standard output closed, or Ctrl-C.
    Done,
    /// `-W` passed.
    TimedOut,
}

/// Runs `herald sub` until `-C`, `-W`, Ctrl-C or a final error.
pub(super) async fn run(args: SubArgs, mut shutdown: Shutdown) -> anyhow::Result<Exit> {
    let options = Options::new(&args.conn, "sub")?;
    let mut s = Subscriber::new(&args, options.version(), options.log)?;
    // `-W` counts from the start: it bounds the whole run, reconnects included.
    let deadline = args
        .timeout
        .map(|secs| Instant::now() + Duration::from_secs_f64(secs));
    let never = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut reconnector = Reconnector::new(options, shutdown.clone());
    loop {
        let connected = tokio::select! {
            c = reconnector.connect() => c?,
            _ = sleep_until(deadline.unwrap_or(never)), if deadline.is_some() => {
                return Ok(Exit::TimedOut);
            }
        };
        let Some((mut link, ack)) = connected else {
            return Ok(Exit::Done);
        };
        let end = s
            .serve(
                &mut link,
                ack.session_present,
                &mut shutdown,
                deadline.unwrap_or(never),
            )
            .await?;
        match end {
            End::Lost(lost) => reconnector.lost(&lost)?,
            End::Done | End::TimedOut => {
                link.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
                return Ok(if matches!(end, End::Done) {
                    Exit::Done
                } else {
                    Exit::TimedOut
                });
            }
        }
    }
}

/// How a connection's loop ended (final errors are `Err`).
enum End {
    /// Nothing more to do.
    Done,
    /// `-W` passed.
    TimedOut,
    /// The connection was lost.
    Lost(Lost),
}

/// The subscriber's state across connections.
struct Subscriber {
    /// The SUBSCRIBE of every new session.
    subscribe: Subscribe,
    /// Whether a SUBSCRIBE was ever acknowledged: a resumed session then holds it.
    subscribed: bool,
    /// `-T` filters.
    filter_out: Vec<String>,
    /// `-R`.
    no_retained: bool,
    /// `--retained-only`.
    retained_only: bool,
    /// `-C`.
    count: Option<u64>,
    /// Messages printed so far.
    printed: u64,
    /// The QoS 2 state of the session.
    inbound: Inbound,
    /// How messages are printed.
    output: Output,
    /// Progress and errors.
    log: Log,
}

impl Subscriber {
    /// The subscriber `args` describe, checked.
    fn new(args: &SubArgs, version: ProtocolVersion, log: Log) -> anyhow::Result<Subscriber> {
        for f in &args.filter_out {
            topic::validate_topic_filter(f)
                .map_err(|e| anyhow::anyhow!("-T/--filter-out {f:?}: {e}"))?;
        }
        let format = if args.json {
            Format::Json
        } else if let Some(spec) = &args.format {
            Format::template(spec)?
        } else if args.verbose {
            Format::Verbose
        } else {
            Format::Payload
        };
        Ok(Subscriber {
            subscribe: subscribe_packet(args, version)?,
            subscribed: false,
            filter_out: args.filter_out.clone(),
            no_retained: args.no_retained,
            retained_only: args.retained_only,
            count: args.count,
            printed: 0,
            inbound: Inbound::default(),
            output: Output::new(format, !args.no_eol),
            log,
        })
    }

    /// One connection, until it ends.
    async fn serve(
        &mut self,
        link: &mut Link,
        session_present: bool,
        shutdown: &mut Shutdown,
        deadline: Instant,
    ) -> anyhow::Result<End> {
        if !session_present {
            self.inbound.session_lost();
        }
        if session_present && self.subscribed {
            self.log
                .info("the session was resumed with its subscriptions: not subscribing again");
        } else if let Err(lost) = link.send(&Packet::Subscribe(self.subscribe.clone())).await {
            return Ok(End::Lost(lost));
        }
        loop {
            let keep_alive = link.keep_alive_at();
            let step = tokio::select! {
                _ = shutdown.wait() => return Ok(End::Done),
                _ = sleep_until(deadline) => return Ok(End::TimedOut),
                packet = link.recv() => match packet {
                    Ok(packet) => self.on_packet(link, packet).await?,
                    Err(lost) => Some(End::Lost(lost)),
                },
                _ = sleep_until(keep_alive.unwrap_or(deadline)), if keep_alive.is_some() => {
                    link.keep_alive().await.err().map(End::Lost)
                }
            };
            if let Some(end) = step {
                return Ok(end);
            }
        }
    }

    /// A packet from the server; `Some` ends the connection's loop.
    async fn on_packet(&mut self, link: &mut Link, packet: Packet) -> anyhow::Result<Option<End>> {
        let reply = match packet {
            Packet::Publish(p) => return self.on_publish(link, p).await,
            Packet::PubRel(rel) => self.inbound.release(rel.packet_id),
            Packet::SubAck(ack) => {
                self.on_suback(&ack)?;
                return Ok(None);
            }
            other => {
                self.log
                    .debug(format_args!("ignored {:?}", other.packet_type()));
                return Ok(None);
            }
        };
        Ok(link.send(&reply).await.err().map(End::Lost))
    }

    /// A message: printed (unless filtered), then acknowledged.
    async fn on_publish(&mut self, link: &mut Link, p: Publish) -> anyhow::Result<Option<End>> {
        if self.inbound.is_new(&p) {
            if self.retained_only && !p.retain {
                // Left unacknowledged: a resumed session gets it again.
                self.log.info("a message that is not retained: done");
                return Ok(Some(End::Done));
            }
            let stale = self.no_retained && p.retain;
            let filtered = self.filter_out.iter().any(|f| topic::matches(f, &p.topic));
            let shown = !stale && !filtered;
            if shown {
                match self.output.write(&p) {
                    Ok(()) => self.printed += 1,
                    // `herald sub | head -1`: the reader is gone; the message stays owed.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Ok(Some(End::Done));
                    }
                    Err(e) => return Err(e).context("writing to standard output"),
                }
            }
        }
        if let Some(ack) = self.inbound.acknowledge(&p)
            && let Err(lost) = link.send(&ack).await
        {
            return Ok(Some(End::Lost(lost)));
        }
        Ok(self
            .count
            .is_some_and(|c| self.printed >= c)
            .then_some(End::Done))
    }

    /// SUBACK: each filter granted, or a final error naming the refused one.
    fn on_suback(&mut self, ack: &SubAck) -> anyhow::Result<()> {
        let subs = &self.subscribe.subscriptions;
        if ack.reason_codes.len() != subs.len() {
            bail!(
                "SUBACK with {} codes for {} filters",
                ack.reason_codes.len(),
                subs.len()
            );
        }
        for (sub, code) in subs.iter().zip(&ack.reason_codes) {
            if code.is_error() {
                let mut why = code.to_string();
                if let Some(reason) = &ack.properties.reason_string {
                    why.push_str(&format!(": {reason}"));
                }
                bail!(
                    "-t {}: the server refused the subscription: {why}",
                    sub.filter
                );
            }
            self.log.info(format_args!(
                "subscribed to {} (QoS {} granted)",
                sub.filter, *code as u8
            ));
        }
        self.subscribed = true;
        Ok(())
    }
}

/// The SUBSCRIBE of `-t`, `-q` and the MQTT 5 subscription options, checked.
fn subscribe_packet(args: &SubArgs, version: ProtocolVersion) -> anyhow::Result<Subscribe> {
    if !version.is_v5() {
        let v5_only = [
            (args.no_local, "--no-local"),
            (args.retain_as_published, "--retain-as-published"),
            (args.retain_handling.is_some(), "--retain-handling"),
        ];
        if let Some((_, flag)) = v5_only.iter().find(|(given, _)| *given) {
            bail!("{flag} is an MQTT 5 subscription option: it needs -V 5");
        }
    }
    let retain_handling = match args.retain_handling {
        Some(1) => RetainHandling::OnNewSubscription,
        Some(2) => RetainHandling::Never,
        _ => RetainHandling::OnSubscribe,
    };
    let options = SubscriptionOptions {
        qos: QoS::from_u8(args.qos).unwrap_or_default(),
        no_local: args.no_local,
        retain_as_published: args.retain_as_published,
        retain_handling,
    };
    let mut subscriptions = Vec::new();
    for t in &args.topics {
        topic::validate_topic_filter(t).map_err(|e| anyhow::anyhow!("-t/--topic {t:?}: {e}"))?;
        subscriptions.push(Subscription {
            filter: t.as_str().into(),
            options,
        });
    }
    // The client sends no PUBLISH, so no other packet id is ever in use.
    let mut subscribe = Subscribe::new(1, "", options.qos);
    subscribe.subscriptions = subscriptions;
    Ok(subscribe)
}
