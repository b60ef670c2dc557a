//! The flags of `herald pub` and `herald sub`, named as mosquitto_pub and mosquitto_sub name
//! them where those exist. clap only parses here; what depends on several flags together
//! (TLS on or off, the session, MQTT 5 only flags) is checked in `options`, `publisher` and
//! `subscriber`, with errors that name the flags.

use std::path::PathBuf;

use mqtt_codec::ProtocolVersion;

/// The flags that say how to reach the server and keep the connection: shared by `herald pub`
/// and `herald sub`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// Host to connect to [default: 127.0.0.1].
    #[arg(short = 'h', long, conflicts_with = "url")]
    pub host: Option<String>,
    /// Port [default: 1883; 8883 with TLS].
    #[arg(short = 'p', long, conflicts_with = "url")]
    pub port: Option<u16>,
    /// Where to connect, as a URL: mqtt://, mqtts://, ws:// or wss://
    /// [user[:password]@]host[:port][/path]. The path is the WebSocket request path (default
    /// /mqtt); URL ports default to 1883, 8883, 80 and 443.
    #[arg(short = 'L', long)]
    pub url: Option<String>,
    /// Username.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// Client identifier [default: herald-pub-/herald-sub- and 8 random hex digits].
    #[arg(short = 'i', long = "id")]
    pub client_id: Option<String>,
    /// MQTT version: mqttv5 (5), mqttv311 (311) or mqttv31 (31).
    #[arg(short = 'V', long = "protocol-version", value_parser = parse_version, default_value = "5")]
    pub version: ProtocolVersion,
    /// Seconds between PINGREQs when nothing else is sent (a server's Server Keep Alive wins);
    /// 0 turns keep-alive off.
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    /// Keep the session (clean session 0; MQTT 5: clean start 0 and a session that never
    /// expires unless --session-expiry says otherwise): subscriptions and unacknowledged
    /// messages survive a reconnect, and a restart of this command with the same --id.
    #[arg(short = 'c', long = "disable-clean-session")]
    pub persistent: bool,
    /// MQTT 5: seconds the server keeps the session after the connection ends; above 0 the
    /// session is resumed as with -c.
    #[arg(short = 'x', long = "session-expiry")]
    pub session_expiry: Option<u32>,
    /// PEM file of the CA certificates that verify the server (turns TLS on).
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// PEM client certificate chain, for servers that ask for one (turns TLS on; needs --key).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Verify the server with the operating system's CA certificates (turns TLS on).
    #[arg(long)]
    pub tls_use_os_certs: bool,
    /// Accept any server certificate and name (turns TLS on). For tests only.
    #[arg(long)]
    pub insecure: bool,
    /// Topic of the will message the server publishes if this client vanishes.
    #[arg(long)]
    pub will_topic: Option<String>,
    /// Payload of the will message.
    #[arg(long, requires = "will_topic")]
    pub will_payload: Option<String>,
    /// QoS of the will message.
    #[arg(long, requires = "will_topic", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub will_qos: Option<u8>,
    /// Retain the will message.
    #[arg(long, requires = "will_topic")]
    pub will_retain: bool,
    /// Seconds a connection attempt may take: TCP, TLS, WebSocket and CONNACK together.
    #[arg(long, default_value_t = 10.0, value_parser = parse_secs)]
    pub connect_timeout: f64,
    /// Seconds before the first reconnect attempt at most; each failure doubles it (the wait
    /// is drawn at random below that ceiling).
    #[arg(long, default_value_t = 0.1, value_parser = parse_secs)]
    pub reconnect_min: f64,
    /// The ceiling of the reconnect wait, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = parse_secs)]
    pub reconnect_max: f64,
    /// Exit when the connection fails or is lost instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,
    /// Print no progress (connections, subscriptions) on stderr; errors are still printed.
    #[arg(long)]
    pub quiet: bool,
    /// Print every packet sent and received on stderr.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Print help (-h is the host, as for mosquitto_pub and mosquitto_sub).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// The MQTT 5 properties of a PUBLISH, as flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "MQTT 5 properties")]
pub struct PropertyArgs {
    /// MQTT 5: a user property, NAME=VALUE; repeatable, kept in order.
    #[arg(long = "user-property", value_parser = parse_pair)]
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5: the payload's content type (a MIME type, say).
    #[arg(long)]
    pub content_type: Option<String>,
    /// MQTT 5: the topic a response should go to.
    #[arg(long)]
    pub response_topic: Option<String>,
    /// MQTT 5: correlation data that ties a response to its request (sent as these bytes).
    #[arg(long)]
    pub correlation_data: Option<String>,
    /// MQTT 5: seconds the message lives on the server before it is dropped undelivered.
    #[arg(long)]
    pub message_expiry: Option<u32>,
    /// MQTT 5: declare the payload UTF-8 text (Payload Format Indicator 1).
    #[arg(long)]
    pub payload_format_indicator: bool,
}

/// `herald pub`: publishes one message (-m, -f, -s, -n, --repeat) or a message per line of
/// standard input (-l), reconnecting by itself and sending unacknowledged QoS 1/2 messages
/// again; exits 0 once every message was acknowledged.
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true)]
#[command(group(clap::ArgGroup::new("source").required(true)
    .args(["message", "file", "stdin_file", "stdin_line", "null_message"])))]
pub struct PubArgs {
    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    pub topic: String,
    /// QoS of the messages.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long)]
    pub retain: bool,
    /// The message.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Send the contents of FILE as the message.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Read standard input to its end and send it as one message.
    #[arg(short = 's', long)]
    pub stdin_file: bool,
    /// Send each line of standard input as a message (without its line ending), until the
    /// input ends.
    #[arg(short = 'l', long)]
    pub stdin_line: bool,
    /// Send an empty message.
    #[arg(short = 'n', long)]
    pub null_message: bool,
    /// Send the message this many times (not with -l).
    #[arg(long, default_value_t = 1, conflicts_with = "stdin_line")]
    pub repeat: u32,
    /// Seconds between repeated messages.
    #[arg(long, default_value_t = 0.0, value_parser = parse_secs, conflicts_with = "stdin_line")]
    pub repeat_delay: f64,
    /// QoS 1/2 messages in flight (sent, not yet acknowledged) at most; the server's Receive
    /// Maximum lowers it.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_inflight: u16,
    /// MQTT 5 properties of every message.
    #[command(flatten)]
    pub properties: PropertyArgs,
}

/// `herald sub`: subscribes and prints what arrives, acknowledging each QoS 1/2 message only
/// once it is written to standard output; reconnects by itself and resumes its session.
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true)]
pub struct SubArgs {
    /// How to connect.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Topic filter to subscribe to; repeatable.
    #[arg(short = 't', long = "topic", required = true)]
    pub topics: Vec<String>,
    /// Do not print messages whose topic matches this filter (they are still acknowledged);
    /// repeatable.
    #[arg(short = 'T', long = "filter-out")]
    pub filter_out: Vec<String>,
    /// The highest QoS to receive messages at.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Exit after printing this many messages.
    #[arg(short = 'C', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit with status 27 once this many seconds have passed since the start.
    #[arg(short = 'W', long, value_parser = parse_secs)]
    pub timeout: Option<f64>,
    /// Print the topic before the payload.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print each message in this format: %t topic, %p payload, %x payload in hex, %l
    /// payload length, %q QoS, %r retain, %m packet id, %j JSON, %U Unix time, %C content
    /// type, %R response topic, %D correlation data, %E message expiry, %F payload format
    /// indicator, %P user properties, %% a percent sign; \n \t \\ escapes.
    #[arg(short = 'F', long, conflicts_with_all = ["verbose", "json"])]
    pub format: Option<String>,
    /// Print each message as one JSON object: topic, qos, retain, dup, payload (or
    /// payload_base64 when it is not UTF-8) and its MQTT 5 properties.
    #[arg(long, conflicts_with = "verbose")]
    pub json: bool,
    /// Do not end each message with a newline.
    #[arg(short = 'N')]
    pub no_eol: bool,
    /// Do not print retained messages (stale state from before the subscription).
    #[arg(short = 'R', conflicts_with = "retained_only")]
    pub no_retained: bool,
    /// Print retained messages only, and exit at the first message that is not retained
    /// (it is left unacknowledged).
    #[arg(long)]
    pub retained_only: bool,
    /// MQTT 5: do not receive this client's own publications.
    #[arg(long)]
    pub no_local: bool,
    /// MQTT 5: keep the retain flag of forwarded messages as it was published.
    #[arg(long)]
    pub retain_as_published: bool,
    /// MQTT 5: when the server sends retained messages: 0 at each subscribe, 1 only for a new
    /// subscription, 2 never.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub retain_handling: Option<u8>,
}

/// `-V`: mosquitto's names and the bare numbers.
fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        "31" | "mqttv31" => Ok(ProtocolVersion::V3_1),
        _ => Err("expected mqttv5 (5), mqttv311 (311) or mqttv31 (31)".into()),
    }
}

/// A duration in seconds: finite and not negative (fractions allowed).
fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        _ => Err("expected a number of seconds, 0 or more (fractions allowed)".into()),
    }
}

/// `NAME=VALUE`; the value may contain `=`.
fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected NAME=VALUE".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;

    #[test]
    fn the_commands_are_well_formed() {
        PubArgs::augment_args(clap::Command::new("pub")).debug_assert();
        SubArgs::augment_args(clap::Command::new("sub")).debug_assert();
    }

    #[test]
    fn versions_seconds_and_pairs() {
        assert_eq!(parse_version("mqttv311"), Ok(ProtocolVersion::V3_1_1));
        assert_eq!(parse_version("31"), Ok(ProtocolVersion::V3_1));
        assert!(parse_version("4").is_err());
        assert_eq!(parse_secs("0.25"), Ok(0.25));
        assert!(parse_secs("-1").is_err() && parse_secs("inf").is_err());
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_pair("ab").is_err());
    }
}
