//! The connection flags, checked together and turned into what the clients use: where to
//! connect, the CONNECT to send, the TLS configuration and the reconnect policy. Every
//! error names the flag at fault.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use mqtt_codec::{Connect, LastWill, ProtocolVersion, QoS, topic};

use super::args::ConnArgs;
use super::log::Log;
use super::rand::os_u64;
use super::tls::{self, TlsOptions};
use super::transport::{Endpoint, Kind};

/// A session that never expires (MQTT 5's 0xFFFFFFFF), what `-c` asks for: the same promise
/// as MQTT 3.1.1's clean session 0.
const NEVER_EXPIRES: u32 = u32::MAX;

/// The connection settings of one run.
#[derive(Debug, Clone)]
pub(super) struct Options {
    /// Where to connect first (a server may send the client elsewhere).
    pub(super) endpoint: Endpoint,
    /// The TLS configuration, when TLS is on.
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    /// The CONNECT of every attempt. Clean start 0 when the session is kept: every attempt,
    /// the first included, resumes what the server holds for this client id.
    pub(super) connect: Connect,
    /// Whether the session outlives connections (`-c`, or `-x` above 0).
    pub(super) persistent: bool,
    /// The bound on one connection attempt (TCP, TLS, WebSocket, CONNACK).
    pub(super) connect_timeout: Duration,
    /// The reconnect waits' first ceiling and their maximum; `None`: `--no-reconnect`.
    pub(super) reconnect: Option<(Duration, Duration)>,
    /// Where progress and errors go.
    pub(super) log: Log,
}

impl Options {
    /// The settings `args` describe, for the command `name` ("pub" or "sub").
    pub(super) fn new(args: &ConnArgs, name: &'static str) -> anyhow::Result<Options> {
        let log = Log {
            name,
            quiet: args.quiet,
            debug: args.debug,
        };
        let (endpoint, url_login) = endpoint(args)?;
        let tls = if endpoint.kind.is_tls() {
            let options = TlsOptions {
                cafile: args.cafile.clone(),
                client_cert: args.cert.clone().zip(args.key.clone()),
                insecure: args.insecure,
            };
            Some(tls::client_config(&options)?)
        } else {
            None
        };
        let (persistent, connect) = connect_packet(args, name, url_login)?;
        let reconnect = (!args.no_reconnect).then(|| {
            (
                Duration::from_secs_f64(args.reconnect_min),
                Duration::from_secs_f64(args.reconnect_max),
            )
        });
        Ok(Options {
            endpoint,
            tls,
            connect,
            persistent,
            connect_timeout: Duration::from_secs_f64(args.connect_timeout.max(0.001)),
            reconnect,
            log,
        })
    }

    /// The protocol version spoken.
    pub(super) fn version(&self) -> ProtocolVersion {
        self.connect.protocol
    }
}

/// A username and password given in `--url`.
type Login = (Option<String>, Option<String>);

/// Where `--url`, or `-h`, `-p` and the TLS flags, say to connect.
fn endpoint(args: &ConnArgs) -> anyhow::Result<(Endpoint, Login)> {
    let wants_tls =
        args.cafile.is_some() || args.cert.is_some() || args.insecure || args.tls_use_os_certs;
    let Some(url) = &args.url else {
        let kind = if wants_tls { Kind::Tls } else { Kind::Tcp };
        let host = args.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = args.port.unwrap_or(kind.default_port());
        let path = "/mqtt".into();
        return Ok((
            Endpoint {
                kind,
                host,
                port,
                path,
            },
            (None, None),
        ));
    };
    let (endpoint, login) = parse_url(url).with_context(|| format!("--url {url:?}"))?;
    if wants_tls && !endpoint.kind.is_tls() {
        bail!(
            "--url {url:?} is not TLS, but --cafile, --cert, --insecure or --tls-use-os-certs \
             asks for it: use mqtts:// or wss://"
        );
    }
    Ok((endpoint, login))
}

/// `scheme://[user[:password]@]host[:port][/path]`.
pub(super) fn parse_url(url: &str) -> anyhow::Result<(Endpoint, Login)> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("expected scheme://host[:port], the scheme mqtt, mqtts, ws or wss");
    };
    let Some(kind) = Kind::from_scheme(scheme) else {
        bail!("unknown scheme {scheme:?}: expected mqtt, mqtts, ws or wss");
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (login, hostport) = match authority.rsplit_once('@') {
        Some((login, hostport)) => {
            let (user, password) = match login.split_once(':') {
                Some((u, p)) => (u.to_string(), Some(p.to_string())),
                None => (login.to_string(), None),
            };
            ((Some(user), password), hostport)
        }
        None => ((None, None), authority),
    };
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        bail!("no host");
    }
    let path = match (kind.is_ws(), path) {
        (true, "") => "/mqtt".to_string(),
        (true, p) => p.to_string(),
        (false, "" | "/") => String::new(),
        (false, p) => bail!("a path ({p:?}) only means something for ws:// and wss://"),
    };
    let port = port.unwrap_or(kind.default_port());
    Ok((
        Endpoint {
            kind,
            host,
            port,
            path,
        },
        login,
    ))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(super) fn split_host_port(s: &str) -> anyhow::Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            bail!("unclosed [ in {s:?}");
        };
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| format!("port {p:?} is not a number from 1 to 65535"))?,
        ),
        None => None,
    };
    Ok((host.to_string(), port))
}

/// The CONNECT of every attempt, and whether the session is kept.
fn connect_packet(args: &ConnArgs, name: &str, login: Login) -> anyhow::Result<(bool, Connect)> {
    let version = args.version;
    let v5 = version.is_v5();
    if args.session_expiry.is_some() && !v5 {
        bail!("-x/--session-expiry is MQTT 5 only (-V 5); for MQTT 3.1.1 use -c");
    }
    let persistent = args.persistent || args.session_expiry.is_some_and(|s| s > 0);
    let client_id = match &args.client_id {
        Some(id) => id.clone(),
        None if persistent => bail!(
            "-c/--disable-clean-session and -x/--session-expiry need -i/--id: a session is \
             found again by its client id"
        ),
        None => format!("herald-{name}-{:08x}", os_u64() as u32),
    };
    if version == ProtocolVersion::V3_1 && !(1..=23).contains(&client_id.len()) {
        bail!("-i/--id: MQTT 3.1 allows client ids of 1 to 23 bytes");
    }
    let mut c = Connect::new(version, client_id, args.keepalive);
    c.clean_start = !persistent;
    if v5 && persistent {
        c.properties.session_expiry_interval = Some(args.session_expiry.unwrap_or(NEVER_EXPIRES));
    }
    c.username = args.username.clone().or(login.0).map(Into::into);
    c.password = args
        .password
        .clone()
        .or(login.1)
        .map(|p| Bytes::from(p.into_bytes()));
    if c.password.is_some() && c.username.is_none() && !v5 {
        bail!("-P/--pw needs -u/--username before MQTT 5");
    }
    c.will = will(args)?;
    Ok((persistent, c))
}

/// The will message of `--will-*`.
fn will(args: &ConnArgs) -> anyhow::Result<Option<LastWill>> {
    let Some(will_topic) = &args.will_topic else {
        return Ok(None);
    };
    topic::validate_topic_name(will_topic)
        .map_err(|e| anyhow::anyhow!("--will-topic {will_topic:?}: {e}"))?;
    let qos = args.will_qos.and_then(QoS::from_u8).unwrap_or_default();
    Ok(Some(LastWill {
        topic: will_topic.as_str().into(),
        payload: Bytes::from(args.will_payload.clone().unwrap_or_default().into_bytes()),
        qos,
        retain: args.will_retain,
        properties: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (e, login) = parse_url("wss://alice:pw@broker.example:9001").unwrap();
        assert_eq!(e.kind, Kind::Wss);
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("broker.example", 9001, "/mqtt")
        );
        assert_eq!(login, (Some("alice".into()), Some("pw".into())));
        let (e, login) = parse_url("mqtts://[::1]").unwrap();
        assert_eq!((e.kind, e.host.as_str(), e.port), (Kind::Tls, "::1", 8883));
        assert_eq!(login, (None, None));
        let (e, _) = parse_url("ws://h/ws/path").unwrap();
        assert_eq!((e.port, e.path.as_str()), (80, "/ws/path"));
        assert!(parse_url("mqtt://h/topic").is_err());
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("mqtt://h:0").is_err());
        assert!(parse_url("mqtt://h:99999").is_err());
        assert!(parse_url("h:1883").is_err());
    }

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("a:1").unwrap(), ("a".into(), Some(1)));
        assert_eq!(split_host_port("a").unwrap(), ("a".into(), None));
        assert_eq!(split_host_port("[::1]:2").unwrap(), ("::1".into(), Some(2)));
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), None));
    }
}
