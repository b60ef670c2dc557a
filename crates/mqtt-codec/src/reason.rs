//! MQTT 5.0 reason codes (§2.4) and the MQTT 3.1.1 return codes they map onto.

use crate::PacketType;

macro_rules! reason_codes {
    ($($(#[$doc:meta])* $variant:ident = $value:literal, $name:literal;)*) => {
        /// An MQTT 5.0 reason code.
        ///
        /// Several names share a value (0x00 is "Success", "Normal disconnection" and
        /// "Granted QoS 0"); the enum has one variant per value, and [`ReasonCode::name_for`]
        /// gives the name the specification uses on a given packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum ReasonCode {
            $($(#[$doc])* $variant = $value,)*
        }

        impl ReasonCode {
            /// Every reason code defined by MQTT 5.0, in ascending order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            /// The reason code with this value, if MQTT 5.0 defines one.
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some(ReasonCode::$variant),)*
                    _ => None,
                }
            }

            /// The specification's name for this code (for 0x00, 0x01, 0x02 the generic one).
            pub fn name(self) -> &'static str {
                match self {
                    $(ReasonCode::$variant => $name,)*
                }
            }
        }
    };
}

reason_codes! {
    /// Success, Normal disconnection, Granted QoS 0.
    Success = 0x00, "Success";
    /// Granted QoS 1 (SUBACK).
    GrantedQoS1 = 0x01, "Granted QoS 1";
    /// Granted QoS 2 (SUBACK).
    GrantedQoS2 = 0x02, "Granted QoS 2";
    /// The client wants its will published although it disconnects normally.
    DisconnectWithWillMessage = 0x04, "Disconnect with Will Message";
    /// The message was accepted but nobody is subscribed.
    NoMatchingSubscribers = 0x10, "No matching subscribers";
    /// UNSUBSCRIBE named a filter that was not subscribed.
    NoSubscriptionExisted = 0x11, "No subscription existed";
    /// Enhanced authentication goes on.
    ContinueAuthentication = 0x18, "Continue authentication";
    /// Re-authentication is starting.
    ReAuthenticate = 0x19, "Re-authenticate";
    /// An error the sender does not want to detail.
    UnspecifiedError = 0x80, "Unspecified error";
    /// The packet could not be parsed.
    MalformedPacket = 0x81, "Malformed Packet";
    /// The packet parsed but broke a rule of the protocol.
    ProtocolError = 0x82, "Protocol Error";
    /// Valid, but refused by this implementation.
    ImplementationSpecificError = 0x83, "Implementation specific error";
    /// The server does not speak the requested protocol version.
    UnsupportedProtocolVersion = 0x84, "Unsupported Protocol Version";
    /// The client identifier is valid UTF-8 but not allowed.
    ClientIdentifierNotValid = 0x85, "Client Identifier not valid";
    /// Authentication failed.
    BadUserNameOrPassword = 0x86, "Bad User Name or Password";
    /// The client may not do this.
    NotAuthorized = 0x87, "Not authorized";
    /// The server cannot serve now.
    ServerUnavailable = 0x88, "Server unavailable";
    /// The server is busy; try later.
    ServerBusy = 0x89, "Server busy";
    /// The client is banned.
    Banned = 0x8A, "Banned";
    /// The server is shutting down.
    ServerShuttingDown = 0x8B, "Server shutting down";
    /// The authentication method is not supported.
    BadAuthenticationMethod = 0x8C, "Bad authentication method";
    /// Nothing arrived within 1.5 times the keep-alive.
    KeepAliveTimeout = 0x8D, "Keep Alive timeout";
    /// Another connection with the same client identifier took over the session.
    SessionTakenOver = 0x8E, "Session taken over";
    /// The topic filter is well-formed but not accepted.
    TopicFilterInvalid = 0x8F, "Topic Filter invalid";
    /// The topic name is well-formed but not accepted.
    TopicNameInvalid = 0x90, "Topic Name invalid";
    /// The packet identifier is already in use.
    PacketIdentifierInUse = 0x91, "Packet Identifier in use";
    /// The packet identifier is not known.
    PacketIdentifierNotFound = 0x92, "Packet Identifier not found";
    /// More unacknowledged QoS 1/2 messages than Receive Maximum allows.
    ReceiveMaximumExceeded = 0x93, "Receive Maximum exceeded";
    /// The topic alias is 0 or above the agreed maximum.
    TopicAliasInvalid = 0x94, "Topic Alias invalid";
    /// The packet is larger than the receiver's maximum packet size.
    PacketTooLarge = 0x95, "Packet too large";
    /// The sender publishes too fast.
    MessageRateTooHigh = 0x96, "Message rate too high";
    /// A quota was exceeded.
    QuotaExceeded = 0x97, "Quota exceeded";
    /// Closed by an administrator.
    AdministrativeAction = 0x98, "Administrative action";
    /// The payload does not match its payload format indicator.
    PayloadFormatInvalid = 0x99, "Payload format invalid";
    /// The server does not support retained messages.
    RetainNotSupported = 0x9A, "Retain not supported";
    /// The server does not support the requested QoS.
    QoSNotSupported = 0x9B, "QoS not supported";
    /// The client should temporarily use another server.
    UseAnotherServer = 0x9C, "Use another server";
    /// The client should permanently use another server.
    ServerMoved = 0x9D, "Server moved";
    /// The server does not support shared subscriptions.
    SharedSubscriptionsNotSupported = 0x9E, "Shared Subscriptions not supported";
    /// The connection rate limit was exceeded.
    ConnectionRateExceeded = 0x9F, "Connection rate exceeded";
    /// The maximum connection time was reached.
    MaximumConnectTime = 0xA0, "Maximum connect time";
    /// The server does not support subscription identifiers.
    SubscriptionIdentifiersNotSupported = 0xA1, "Subscription Identifiers not supported";
    /// The server does not support wildcard subscriptions.
    WildcardSubscriptionsNotSupported = 0xA2, "Wildcard Subscriptions not supported";
}

impl ReasonCode {
    /// 0x00 as used in DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 as used in SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// Whether this code means failure (0x80 and above).
    pub fn is_error(self) -> bool {
        self as u8 >= 0x80
    }

    /// The name the specification gives this code on `packet` (for 0x00: "Success",
    /// "Normal disconnection" or "Granted QoS 0").
    pub fn name_for(self, packet: PacketType) -> &'static str {
        match (self, packet) {
            (ReasonCode::Success, PacketType::Disconnect) => "Normal disconnection",
            (ReasonCode::Success, PacketType::SubAck) => "Granted QoS 0",
            _ => self.name(),
        }
    }

    /// Whether MQTT 5.0 allows this reason code on `packet` (§3.x.2.1 of each packet).
    ///
    /// A table, kept whole: one arm per packet, listing the codes of that packet's table in
    /// the specification in the specification's order, so that each arm can be checked
    /// against its section line by line.
    pub fn valid_for(self, packet: PacketType) -> bool {
        use ReasonCode::*;
        match packet {
            PacketType::ConnAck => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, Success | PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWillMessage
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
            _ => false,
        }
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code closest to this reason code (§3.2.2.3 of 3.1.1).
    pub fn to_connack_return_code(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword | ReasonCode::BadAuthenticationMethod => 4,
            ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
            _ => 3,
        }
    }

    /// The reason code for an MQTT 3.1/3.1.1 CONNACK return code (0-5).
    pub fn from_connack_return_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code for this reason code: the granted QoS, or 0x80.
    pub fn to_suback_return_code(self) -> u8 {
        match self {
            ReasonCode::Success | ReasonCode::GrantedQoS1 | ReasonCode::GrantedQoS2 => self as u8,
            _ => 0x80,
        }
    }
}

impl Default for ReasonCode {
    /// Success (0x00): the reason code a packet has when the wire form leaves it out.
    fn default() -> Self {
        ReasonCode::Success
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), *self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_and_is_named() {
        for &code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(code as u8), Some(code));
            assert!(!code.name().is_empty());
        }
        assert_eq!(ReasonCode::ALL.len(), 43);
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn zero_has_a_name_per_packet() {
        let c = ReasonCode::Success;
        assert_eq!(c.name_for(PacketType::Disconnect), "Normal disconnection");
        assert_eq!(c.name_for(PacketType::SubAck), "Granted QoS 0");
        assert_eq!(c.name_for(PacketType::PubAck), "Success");
        assert_eq!(
            ReasonCode::SessionTakenOver.to_string(),
            "Session taken over (0x8E)"
        );
    }

    #[test]
    fn validity_per_packet() {
        assert!(ReasonCode::SessionTakenOver.valid_for(PacketType::Disconnect));
        assert!(!ReasonCode::SessionTakenOver.valid_for(PacketType::ConnAck));
        assert!(ReasonCode::PacketIdentifierNotFound.valid_for(PacketType::PubRel));
        assert!(!ReasonCode::NoMatchingSubscribers.valid_for(PacketType::PubComp));
        assert!(ReasonCode::ReAuthenticate.valid_for(PacketType::Auth));
        assert!(!ReasonCode::Success.valid_for(PacketType::Publish));
    }

    #[test]
    fn v3_return_codes_map_both_ways() {
        for code in 0..=5 {
            let rc = ReasonCode::from_connack_return_code(code).unwrap();
            assert_eq!(rc.to_connack_return_code(), code);
        }
        assert_eq!(ReasonCode::from_connack_return_code(6), None);
        assert_eq!(ReasonCode::Banned.to_connack_return_code(), 5);
        assert_eq!(ReasonCode::QuotaExceeded.to_suback_return_code(), 0x80);
        assert_eq!(ReasonCode::GrantedQoS2.to_suback_return_code(), 2);
    }
}
