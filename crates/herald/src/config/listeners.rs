//! `[listeners]`: the addresses Herald accepts MQTT on, what each speaks, and which of them
//! may face the network.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    /// MQTT over TCP.
    pub mqtt: Vec<SocketAddr>,
    /// MQTT over WebSocket.
    pub ws: Vec<SocketAddr>,
    /// MQTT over TLS (needs `tls.cert_file` and `tls.key_file`).
    pub tls: Vec<SocketAddr>,
    /// MQTT over WebSocket over TLS.
    pub wss: Vec<SocketAddr>,
    /// The HTTP path WebSocket clients connect to.
    pub ws_path: String,
    /// Addresses, among the above, whose connections start with a PROXY protocol header
    /// (v1 or v2, from HAProxy, nginx or a cloud load balancer); a connection without a
    /// valid one is refused.
    pub proxy_protocol: Vec<SocketAddr>,
    /// Addresses, among the above, where a 3.1/3.1.1 client's QoS 1/2 PUBLISH that cannot be
    /// queued for every subscriber (a full queue, the node's memory budget) is acknowledged
    /// all the same and counted (`herald_accepted_unqueued_total`), as mosquitto does.
    /// Elsewhere such a publisher is disconnected without its acknowledgement, so it sends
    /// the message again later: 3.1.1 has no reason code to say no with.
    pub v3_accept_refused: Vec<SocketAddr>,
    /// Allow a non-loopback listener that admits anonymous clients (`auth.anonymous`;
    /// every listener does while no authentication method is configured).
    pub allow_anonymous_public: bool,
    /// The listen backlog of every listener above: connections the kernel completes and
    /// queues before Herald accepts them (a reconnect storm arrives faster than one accept
    /// loop). The kernel caps it at `net.core.somaxconn`.
    pub backlog: u32,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            mqtt: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            ws: vec![SocketAddr::from(([127, 0, 0, 1], 8083))],
            tls: Vec::new(),
            wss: Vec::new(),
            ws_path: "/mqtt".into(),
            proxy_protocol: Vec::new(),
            v3_accept_refused: Vec::new(),
            allow_anonymous_public: false,
            backlog: 1024,
        }
    }
}

impl Listeners {
    /// Every listener address with its kind.
    pub fn all(&self) -> impl Iterator<Item = (ListenerKind, SocketAddr)> + '_ {
        [
            (ListenerKind::Mqtt, &self.mqtt),
            (ListenerKind::Ws, &self.ws),
            (ListenerKind::Tls, &self.tls),
            (ListenerKind::Wss, &self.wss),
        ]
        .into_iter()
        .flat_map(|(kind, addrs)| addrs.iter().map(move |a| (kind, *a)))
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// MQTT over TCP.
    Mqtt,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    /// Every kind, in the order metrics and `$SYS` list them.
    pub const ALL: [ListenerKind; 4] = [
        ListenerKind::Mqtt,
        ListenerKind::Ws,
        ListenerKind::Tls,
        ListenerKind::Wss,
    ];

    /// The config key listing listeners of this kind.
    pub fn key(self) -> &'static str {
        match self {
            ListenerKind::Mqtt => "listeners.mqtt",
            ListenerKind::Ws => "listeners.ws",
            ListenerKind::Tls => "listeners.tls",
            ListenerKind::Wss => "listeners.wss",
        }
    }

    /// A short name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ListenerKind::Mqtt => "mqtt",
            ListenerKind::Ws => "ws",
            ListenerKind::Tls => "tls",
            ListenerKind::Wss => "wss",
        }
    }

    /// Whether connections start with a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// Whether MQTT travels in WebSocket frames.
    pub fn is_ws(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

impl Listeners {
    /// Whether a listener starts its connections with a TLS handshake (and so needs the
    /// certificates of `[tls]`).
    pub(super) fn need_tls(&self) -> bool {
        self.all().any(|(kind, _)| kind.is_tls())
    }

    /// Checks that there is a listener, that no address is listed twice, that the addresses
    /// with options are listeners', and the backlog and WebSocket path.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.all().next().is_none() {
            return Err(invalid(
                "listeners.mqtt",
                "at least one listener (mqtt, ws, tls or wss) is needed",
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for (kind, addr) in self.all() {
            if addr.port() != 0
                && let Some(other) = seen.insert(addr, kind)
            {
                return Err(invalid(
                    kind.key(),
                    format!("{addr} is also in {}", other.key()),
                ));
            }
        }
        for (key, addrs) in [
            ("listeners.proxy_protocol", &self.proxy_protocol),
            ("listeners.v3_accept_refused", &self.v3_accept_refused),
        ] {
            if let Some(addr) = addrs.iter().find(|p| !self.all().any(|(_, a)| a == **p)) {
                return Err(invalid(
                    key,
                    format!("{addr} is not the address of a listener"),
                ));
            }
        }
        if !(1..=65_535).contains(&self.backlog) {
            return Err(invalid("listeners.backlog", "must be between 1 and 65535"));
        }
        if !self.ws_path.starts_with('/') || self.ws_path.contains(char::is_whitespace) {
            return Err(invalid(
                "listeners.ws_path",
                format!("{:?} is not an absolute HTTP path", self.ws_path),
            ));
        }
        Ok(())
    }

    /// Refuses a listener off loopback that admits anonymous clients (`auth.anonymous`)
    /// unless that is accepted explicitly.
    pub(super) fn validate_exposure(
        &self,
        auth: &super::AuthConfig,
        certificate: bool,
    ) -> Result<(), ConfigError> {
        if !self.allow_anonymous_public
            && let Some((kind, addr)) = self
                .all()
                .find(|(k, a)| !a.ip().is_loopback() && auth.anonymous_on(k.label(), certificate))
        {
            let why = if auth.chain(certificate).is_empty() {
                "Herald has no authentication configured (auth.password_file, [auth.jwt], \
                 [auth.callout] or client certificates)"
            } else {
                "auth.anonymous lets anonymous clients in on this listener"
            };
            return Err(invalid(
                kind.key(),
                format!(
                    "{addr} is not a loopback address and {why}; set \
                     listeners.allow_anonymous_public = true \
                     (HERALD_LISTENERS_ALLOW_ANONYMOUS_PUBLIC=true) to accept anonymous \
                     clients from the network"
                ),
            ));
        }
        Ok(())
    }
}
