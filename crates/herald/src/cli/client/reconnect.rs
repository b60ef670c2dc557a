//! The self-healing part: connect, and after each failure or loss wait a jittered,
//! exponentially growing time (see `backoff`) and connect again, resuming the session.
//!
//! What is final and what is retried:
//! - a CONNACK refusal that waiting cannot cure (bad credentials, not authorized, banned,
//!   an unsupported version, an invalid client id or will) ends the run with a message
//!   saying which flag to look at;
//! - on the first connection of a run, so does a host that does not resolve, a certificate
//!   that does not verify and a WebSocket upgrade the server refuses (a typo, not an outage);
//! - a DISCONNECT with 0x8E Session taken over ends it too: another client took the client id,
//!   and taking it back would only make the two take turns;
//! - everything else (refused TCP connections, resets, timeouts, a server shutting down,
//!   busy or unavailable) is retried until Ctrl-C, unless `--no-reconnect`.
//!
//! A server may send the client elsewhere (MQTT 5 Server Reference with 0x9C Use another
//! server, for the next attempt, or 0x9D Server moved, for good).

use std::time::Duration;

use anyhow::bail;
use mqtt_codec::{ConnAck, ReasonCode};
use tokio::time::{Instant, sleep, timeout};

use super::backoff::Backoff;
use super::link::{Link, Lost};
use super::options::{Options, split_host_port};
use super::rand::os_u64;
use super::signal::Shutdown;
use super::transport::{Connector, Endpoint, OpenError};

/// A connection that lasted this long resets the backoff: the server is up again.
const STABLE: Duration = Duration::from_secs(5);

/// Connects and reconnects one client.
pub(super) struct Reconnector {
    /// The connection settings; the client id is updated if the server assigns one.
    options: Options,
    /// Opens connections (holds the TLS configuration).
    connector: Connector,
    /// The waits between attempts.
    backoff: Backoff,
    /// Where to connect: the flags' endpoint, or where a server moved the client (0x9D).
    home: Endpoint,
    /// Where a server sent the client for the next attempt only (0x9C).
    detour: Option<Endpoint>,
    /// Whether a connection ever succeeded (configuration errors are final before).
    connected_once: bool,
    /// Whether the next attempt waits first (every attempt but the first of the run).
    wait_first: bool,
    /// When the present connection came up.
    up_since: Option<Instant>,
    /// Ctrl-C.
    shutdown: Shutdown,
}

impl Reconnector {
    /// A reconnector for `options`.
    pub(super) fn new(options: Options, shutdown: Shutdown) -> Self {
        let (min, max) = options
            .reconnect
            .unwrap_or((Duration::ZERO, Duration::ZERO));
        Reconnector {
            connector: Connector::new(options.tls.clone()),
            backoff: Backoff::new(min, max, os_u64()),
            home: options.endpoint.clone(),
            detour: None,
            connected_once: false,
            wait_first: false,
            up_since: None,
            shutdown,
            options,
        }
    }

    /// Connects, waiting and retrying as the module says. `None` on Ctrl-C; an error when
    /// there is no point in trying again.
    pub(super) async fn connect(&mut self) -> anyhow::Result<Option<(Link, ConnAck)>> {
        let log = self.options.log;
        // A clone of the signal, so that waiting on it does not borrow all of `self`.
        let mut shutdown = self.shutdown.clone();
        loop {
            let to = self.detour.take().unwrap_or_else(|| self.home.clone());
            if self.wait_first {
                let wait = self.backoff.next_wait();
                log.info(format_args!(
                    "reconnecting to {to} in {:.2} s (attempt {})",
                    wait.as_secs_f64(),
                    self.backoff.failures()
                ));
                tokio::select! {
                    _ = sleep(wait) => {}
                    _ = shutdown.wait() => return Ok(None),
                }
            }
            self.wait_first = true;
            let limit = self.options.connect_timeout;
            let attempt = tokio::select! {
                r = timeout(limit, self.attempt(&to)) => r,
                _ = shutdown.wait() => return Ok(None),
            };
            let failure = match attempt {
                Err(_) => format!("no CONNACK within {:.1} s", limit.as_secs_f64()),
                Ok(Err(Failure::Open(e))) if e.is_configuration() && !self.connected_once => {
                    bail!("cannot connect to {to}: {e}")
                }
                Ok(Err(Failure::Open(e))) => e.to_string(),
                Ok(Err(Failure::Lost(lost))) => lost.to_string(),
                Ok(Ok((link, ack))) if !ack.reason_code.is_error() => {
                    self.connected(&to, &ack);
                    return Ok(Some((link, ack)));
                }
                Ok(Ok((_, ack))) => self.refused(&to, &ack)?,
            };
            if self.options.reconnect.is_none() {
                bail!("cannot connect to {to}: {failure}");
            }
            log.info(format_args!("cannot connect to {to}: {failure}"));
        }
    }

    /// One attempt: the transport, then CONNECT and CONNACK.
    async fn attempt(&self, to: &Endpoint) -> Result<(Link, ConnAck), Failure> {
        let conn = self.connector.open(to).await.map_err(Failure::Open)?;
        let connect = self.options.connect.clone();
        Link::handshake(conn, connect, self.options.log)
            .await
            .map_err(Failure::Lost)
    }

    /// Reports a successful CONNACK and keeps what it assigned.
    fn connected(&mut self, to: &Endpoint, ack: &ConnAck) {
        self.up_since = Some(Instant::now());
        if let Some(id) = &ack.properties.assigned_client_identifier {
            self.options.connect.client_id = id.clone();
        }
        let session = match (self.options.persistent, ack.session_present) {
            (_, true) => "session resumed",
            (true, false) => "new session",
            (false, false) => "clean session",
        };
        let line = format!(
            "connected to {to} as {} ({session})",
            self.options.connect.client_id
        );
        // The first connection is what the user asked for; only reconnections are news.
        if self.connected_once {
            self.options.log.info(line);
        } else {
            self.options.log.debug(line);
        }
        // A server only says so when it keeps the session for less than asked.
        if let Some(granted) = ack.properties.session_expiry_interval
            && !self.connected_once
        {
            self.options.log.info(format_args!(
                "the server keeps the session only {granted} s after a disconnection"
            ));
        }
        self.connected_once = true;
    }

    /// A CONNACK refusal: final (an error), a redirect, or worth another attempt (the
    /// failure to report).
    fn refused(&mut self, to: &Endpoint, ack: &ConnAck) -> anyhow::Result<String> {
        let code = ack.reason_code;
        let mut why = format!("refused: {code}");
        if let Some(reason) = &ack.properties.reason_string {
            why.push_str(&format!(" ({reason})"));
        }
        if let Some(hint) = final_refusal(code) {
            bail!("{to} {why}: {hint}");
        }
        self.follow(code, ack.properties.server_reference.as_deref());
        Ok(why)
    }

    /// A connection ended: reports why, follows a redirect, and says whether to connect
    /// again (an error: not).
    pub(super) fn lost(&mut self, why: &Lost) -> anyhow::Result<()> {
        if self.up_since.take().is_some_and(|t| t.elapsed() >= STABLE) {
            self.backoff.reset();
        }
        if let Lost::Disconnect(d) = why {
            if d.reason_code == ReasonCode::SessionTakenOver {
                bail!(
                    "{why}: another client connected with client id {:?}; not reconnecting, \
                     which would only take the session back and forth",
                    self.options.connect.client_id
                );
            }
            self.follow(d.reason_code, d.properties.server_reference.as_deref());
        }
        if self.options.reconnect.is_none() {
            bail!("connection lost: {why}");
        }
        self.options
            .log
            .info(format_args!("connection lost: {why}"));
        Ok(())
    }

    /// Follows a Server Reference given with 0x9C (next attempt) or 0x9D (from now on).
    fn follow(&mut self, code: ReasonCode, reference: Option<&str>) {
        let moved = code == ReasonCode::ServerMoved;
        if !moved && code != ReasonCode::UseAnotherServer {
            return;
        }
        let Some(reference) = reference else {
            return;
        };
        let log = self.options.log;
        match redirect(&self.home, reference) {
            Some(to) if moved => {
                log.info(format_args!(
                    "the server moved to {to}: connecting there from now on"
                ));
                self.home = to;
            }
            Some(to) => {
                log.info(format_args!("the server sends this client to {to} for now"));
                self.detour = Some(to);
            }
            None => log.error(format_args!(
                "cannot follow the server reference {reference:?}: expected host[:port] or a URL"
            )),
        }
    }
}

/// Why an attempt failed.
enum Failure {
    /// The transport did not open.
    Open(OpenError),
    /// CONNECT or CONNACK did not go through.
    Lost(Lost),
}

/// The endpoint a Server Reference names: its first entry (a list is space-separated), a
/// URL or `host[:port]`; what it leaves out stays as in `from`.
fn redirect(from: &Endpoint, reference: &str) -> Option<Endpoint> {
    let first = reference.split([' ', ',']).find(|s| !s.is_empty())?;
    if first.contains("://") {
        return super::options::parse_url(first).ok().map(|(e, _)| e);
    }
    let (host, port) = split_host_port(first).ok()?;
    if host.is_empty() {
        return None;
    }
    Some(Endpoint {
        host,
        port: port.unwrap_or(from.port),
        ..from.clone()
    })
}

/// A hint for each CONNACK refusal that no wait can cure; `None` for those worth retrying.
fn final_refusal(code: ReasonCode) -> Option<&'static str> {
    use ReasonCode::*;
    Some(match code {
        BadUserNameOrPassword => "check -u/--username and -P/--pw",
        NotAuthorized => "this client may not connect: check -u/--username, -P/--pw or --cert",
        Banned => "the server has banned this client",
        BadAuthenticationMethod => "the server does not accept this authentication",
        UnsupportedProtocolVersion => "the server does not speak this -V/--protocol-version",
        ClientIdentifierNotValid => "the server does not accept this -i/--id",
        TopicNameInvalid | PayloadFormatInvalid | RetainNotSupported | QoSNotSupported => {
            "check the --will-* flags"
        }
        PacketTooLarge => "the CONNECT is over the server's packet size (a large will?)",
        MalformedPacket | ProtocolError => "the server does not accept this CONNECT",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::transport::Kind;

    #[test]
    fn redirects_keep_what_the_reference_leaves_out() {
        let from = Endpoint {
            kind: Kind::Ws,
            host: "a".into(),
            port: 8083,
            path: "/mqtt".into(),
        };
        let to = redirect(&from, "b:9000 c:9001").unwrap();
        assert_eq!((to.kind, to.host.as_str(), to.port), (Kind::Ws, "b", 9000));
        assert_eq!(redirect(&from, "b").unwrap().port, 8083);
        let to = redirect(&from, "mqtts://d").unwrap();
        assert_eq!((to.kind, to.host.as_str(), to.port), (Kind::Tls, "d", 8883));
        assert_eq!(redirect(&from, "  "), None);
        assert_eq!(redirect(&from, "b:x"), None);
    }

    #[test]
    fn which_refusals_are_final() {
        assert!(final_refusal(ReasonCode::BadUserNameOrPassword).is_some());
        assert!(final_refusal(ReasonCode::NotAuthorized).is_some());
        assert!(final_refusal(ReasonCode::ServerUnavailable).is_none());
        assert!(final_refusal(ReasonCode::ServerBusy).is_none());
        assert!(final_refusal(ReasonCode::UseAnotherServer).is_none());
        assert!(final_refusal(ReasonCode::QuotaExceeded).is_none());
    }
}
