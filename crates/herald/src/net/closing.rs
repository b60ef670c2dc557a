//! Why and how a connection ends: the counted reason, the reason code a v5 client is told,
//! and for a protocol violation the rule it broke.

use mqtt_codec::{DecodeError, ReasonCode};

use crate::broker::stats::CloseReason;

/// Why and how a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closing {
    /// The counted reason.
    pub(crate) reason: CloseReason,
    /// The reason code a v5 client is told in DISCONNECT (`None`: no DISCONNECT).
    pub(crate) code: Option<ReasonCode>,
    /// For a protocol violation, the rule the client broke (`[MQTT-3.1.0-2]`), logged.
    pub(crate) rule: Option<&'static str>,
}

impl Closing {
    /// A close for `reason`, with its usual reason code.
    pub(crate) fn new(reason: CloseReason) -> Self {
        Closing {
            reason,
            code: reason.disconnect_code(),
            rule: None,
        }
    }

    /// A close for a packet that failed to decode, told the codec's precise reason code.
    pub(crate) fn decode(e: &DecodeError) -> Self {
        let code = e.reason_code();
        let reason = match code {
            ReasonCode::MalformedPacket => CloseReason::MalformedPacket,
            ReasonCode::PacketTooLarge => CloseReason::PacketTooLarge,
            ReasonCode::TopicAliasInvalid => CloseReason::TopicAliasInvalid,
            // A CONNECT asking for a protocol level Herald does not speak is refused.
            ReasonCode::UnsupportedProtocolVersion => CloseReason::ConnectRefused,
            _ => CloseReason::ProtocolError,
        };
        Closing {
            reason,
            code: Some(code),
            rule: Some(e.rule()),
        }
    }

    /// A protocol error told with a specific reason code, breaking `rule`.
    pub(crate) fn protocol(code: ReasonCode, rule: &'static str) -> Self {
        Closing {
            reason: CloseReason::ProtocolError,
            code: Some(code),
            rule: Some(rule),
        }
    }

    /// A close without a DISCONNECT.
    pub(crate) fn silent(reason: CloseReason) -> Self {
        Closing {
            reason,
            code: None,
            rule: None,
        }
    }

    /// Whether the client broke a rule (logged at INFO, rate-limited).
    pub(crate) fn is_violation(&self) -> bool {
        matches!(
            self.reason,
            CloseReason::MalformedPacket
                | CloseReason::ProtocolError
                | CloseReason::PacketTooLarge
                | CloseReason::ReceiveMaximumExceeded
                | CloseReason::TopicAliasInvalid
        )
    }
}
