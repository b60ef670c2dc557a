//! Why and how a connection ends: the counted reason and the reason code a v5 client is told.
//! Kept to a few bytes: it is held across the close's awaits, in the connection's future,
//! which every idle connection pays for (the rule a violation broke is kept in `Live`).

use mqtt_codec::{DecodeError, ReasonCode};

use crate::broker::stats::CloseReason;

/// Why and how a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    /// The counted reason.
    pub reason: CloseReason,
    /// The reason code a v5 client is told in DISCONNECT (`None`: no DISCONNECT).
    pub code: Option<ReasonCode>,
}

impl Closing {
    /// A close for `reason`, with its usual reason code.
    pub fn new(reason: CloseReason) -> Self {
        Closing {
            reason,
            code: reason.disconnect_code(),
        }
    }

    /// A close for a packet that failed to decode, told the codec's precise reason code.
    pub fn decode(e: &DecodeError) -> Self {
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
        }
    }

    /// A protocol error told with a specific reason code.
    pub fn protocol(code: ReasonCode) -> Self {
        Closing {
            reason: CloseReason::ProtocolError,
            code: Some(code),
        }
    }

    /// A close without a DISCONNECT.
    pub fn silent(reason: CloseReason) -> Self {
        Closing { reason, code: None }
    }

    /// Whether the client broke a rule (logged at INFO, rate-limited).
    pub fn is_violation(&self) -> bool {
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
