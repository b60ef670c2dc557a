//! `herald pub`: connect, send what the source gives within the in-flight window, take the
//! acknowledgements; on a lost connection reconnect and send again what was not
//! acknowledged. Exits 0 once every message is acknowledged and none was refused.

use anyhow::bail;
use bytes::Bytes;
use mqtt_codec::{Ack, Packet, ProtocolVersion, Publish, QoS, ReasonCode, topic};
use tokio::time::sleep_until;

use super::args::{PropertyArgs, PubArgs};
use super::link::{Link, Lost};
use super::log::Log;
use super::options::Options;
use super::outbound::{Acked, Outbound};
use super::reconnect::Reconnector;
use super::signal::Shutdown;
use super::source::Source;

/// Runs `herald pub` until its messages are acknowledged, Ctrl-C, or a final error.
pub(super) async fn run(args: PubArgs, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let options = Options::new(&args.conn, "pub")?;
    let template = template(&args, options.version())?;
    let mut p = Publisher {
        outbound: Outbound::new(template, args.max_inflight),
        source: Source::new(&args)?,
        exhausted: false,
        started: 0,
        refused: 0,
        log: options.log,
    };
    let mut reconnector = Reconnector::new(options, shutdown.clone());
    loop {
        let Some((mut link, ack)) = reconnector.connect().await? else {
            return p.interrupted();
        };
        p.check_limits(&link, &args)?;
        match p
            .serve(&mut link, ack.session_present, &mut shutdown)
            .await?
        {
            End::Finished => {
                link.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
                break;
            }
            End::Interrupted => {
                link.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
                return p.interrupted();
            }
            End::Lost(lost) => reconnector.lost(&lost)?,
        }
    }
    if p.refused > 0 {
        bail!("{} of {} messages were refused", p.refused, p.started);
    }
    Ok(())
}

/// How a connection's loop ended (final errors are `Err`).
enum End {
    /// Every message is sent and acknowledged.
    Finished,
    /// Ctrl-C.
    Interrupted,
    /// The connection was lost.
    Lost(Lost),
}

/// The publisher's state across connections.
struct Publisher {
    /// Messages in flight.
    outbound: Outbound,
    /// Where messages come from.
    source: Source,
    /// Whether the source has no more.
    exhausted: bool,
    /// Messages taken from the source.
    started: u64,
    /// Messages the server refused (or that are too large for it).
    refused: u64,
    /// Progress and errors.
    log: Log,
}

impl Publisher {
    /// Fails when the server cannot take these messages at all (MQTT 5 CONNACK limits).
    fn check_limits(&self, link: &Link, args: &PubArgs) -> anyhow::Result<()> {
        let limits = &link.limits;
        if args.qos > limits.maximum_qos as u8 {
            bail!(
                "-q {}: the server accepts QoS {} at most",
                args.qos,
                limits.maximum_qos as u8
            );
        }
        if args.retain && !limits.retain_available {
            bail!("-r: the server does not keep retained messages");
        }
        Ok(())
    }

    /// One connection: what is owed goes again first, then new messages, until the source
    /// is done and everything is acknowledged.
    async fn serve(
        &mut self,
        link: &mut Link,
        session_present: bool,
        shutdown: &mut Shutdown,
    ) -> anyhow::Result<End> {
        self.outbound
            .set_receive_maximum(link.limits.receive_maximum);
        let (again, completed) = self.outbound.resume(session_present);
        if completed > 0 {
            self.log.info(format_args!(
                "{completed} QoS 2 messages were complete at PUBREC (the server lost the session)"
            ));
        }
        if !again.is_empty() {
            self.log.info(format_args!(
                "sending {} unacknowledged packets again",
                again.len()
            ));
        }
        for packet in &again {
            if let Err(lost) = link.send(packet).await {
                return Ok(End::Lost(lost));
            }
        }
        loop {
            if self.exhausted && self.outbound.in_flight() == 0 {
                return Ok(End::Finished);
            }
            let keep_alive = link.keep_alive_at();
            let take = !self.exhausted && self.outbound.can_send();
            let step = tokio::select! {
                _ = shutdown.wait() => return Ok(End::Interrupted),
                packet = link.recv() => match packet {
                    Ok(packet) => self.on_packet(link, packet).await,
                    Err(lost) => Err(lost),
                },
                _ = sleep_until(keep_alive.unwrap_or_else(far_future)), if keep_alive.is_some() => {
                    link.keep_alive().await
                }
                next = self.source.next(), if take => match next? {
                    Some(payload) => self.send(link, payload).await,
                    None => {
                        self.exhausted = true;
                        Ok(())
                    }
                },
            };
            if let Err(lost) = step {
                return Ok(End::Lost(lost));
            }
        }
    }

    /// Sends a new message, unless it is larger than the server accepts.
    async fn send(&mut self, link: &mut Link, payload: Bytes) -> Result<(), Lost> {
        let size = self.outbound.encoded_len(&payload, link.version());
        if let Some(max) = link.limits.maximum_packet_size
            && size > max as usize
        {
            self.started += 1;
            self.refused += 1;
            self.log.error(format_args!(
                "message {} not sent: {size} bytes, over the server's Maximum Packet Size of {max}",
                self.started
            ));
            return Ok(());
        }
        self.started += 1;
        let publish = self.outbound.publish(self.started, payload);
        link.send(&Packet::Publish(publish)).await
    }

    /// An acknowledgement (or, rarely, a message for this client id's session).
    async fn on_packet(&mut self, link: &mut Link, packet: Packet) -> Result<(), Lost> {
        let acked = match packet {
            Packet::PubAck(ack) => self.outbound.on_puback(&ack),
            Packet::PubRec(ack) => self.outbound.on_pubrec(&ack),
            Packet::PubComp(ack) => self.outbound.on_pubcomp(&ack),
            // A session this client id had subscribed with: take the messages politely.
            Packet::Publish(p) => {
                let reply = match p.qos {
                    QoS::AtMostOnce => return Ok(()),
                    QoS::AtLeastOnce => Packet::PubAck(Ack::new(p.packet_id)),
                    QoS::ExactlyOnce => Packet::PubRec(Ack::new(p.packet_id)),
                };
                return link.send(&reply).await;
            }
            Packet::PubRel(rel) => {
                return link.send(&Packet::PubComp(Ack::new(rel.packet_id))).await;
            }
            other => {
                self.log
                    .debug(format_args!("ignored {:?}", other.packet_type()));
                return Ok(());
            }
        };
        match acked {
            Acked::Release(pubrel) => link.send(&pubrel).await?,
            Acked::Done {
                number,
                refused: Some(why),
            } => {
                self.refused += 1;
                self.log.error(format_args!(
                    "message {number} refused by the server: {why}"
                ));
            }
            Acked::Done { refused: None, .. } => {}
            Acked::Unknown => self
                .log
                .debug("an acknowledgement for no message in flight"),
        }
        Ok(())
    }

    /// Ctrl-C: fine if nothing was left unsent, unacknowledged or refused.
    fn interrupted(&self) -> anyhow::Result<()> {
        let owed = self.outbound.in_flight() + self.source.waiting();
        if owed > 0 {
            bail!("interrupted with {owed} messages not sent or not acknowledged");
        }
        if self.refused > 0 {
            bail!("{} of {} messages were refused", self.refused, self.started);
        }
        Ok(())
    }
}

/// A moment that never comes, for a disabled `select!` branch's expression.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

/// The PUBLISH every message is sent as, from the flags, checked.
fn template(args: &PubArgs, version: ProtocolVersion) -> anyhow::Result<Publish> {
    topic::validate_topic_name(&args.topic)
        .map_err(|e| anyhow::anyhow!("-t/--topic {:?}: {e}", args.topic))?;
    let mut p = Publish::new(args.topic.as_str(), Bytes::new());
    p.qos = QoS::from_u8(args.qos).unwrap_or_default();
    p.retain = args.retain;
    let a: &PropertyArgs = &args.properties;
    if !version.is_v5() {
        let v5_only = [
            (!a.user_properties.is_empty(), "--user-property"),
            (a.content_type.is_some(), "--content-type"),
            (a.response_topic.is_some(), "--response-topic"),
            (a.correlation_data.is_some(), "--correlation-data"),
            (a.message_expiry.is_some(), "--message-expiry"),
            (a.payload_format_indicator, "--payload-format-indicator"),
        ];
        if let Some((_, flag)) = v5_only.iter().find(|(given, _)| *given) {
            bail!("{flag} is an MQTT 5 property: it needs -V 5");
        }
        return Ok(p);
    }
    if let Some(t) = &a.response_topic {
        topic::validate_topic_name(t)
            .map_err(|e| anyhow::anyhow!("--response-topic {t:?}: {e}"))?;
    }
    let props = &mut p.properties;
    props.user_properties = a
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect();
    props.content_type = a.content_type.as_deref().map(Into::into);
    props.response_topic = a.response_topic.as_deref().map(Into::into);
    props.correlation_data = a
        .correlation_data
        .as_ref()
        .map(|d| Bytes::from(d.clone().into_bytes()));
    props.message_expiry_interval = a.message_expiry;
    props.payload_format_indicator = a.payload_format_indicator.then_some(true);
    Ok(p)
}
