//! Topic names, topic filters and shared subscriptions (§4.7, §4.8.2).
//!
//! A topic name is what a message is published to; it has no wildcards. A topic filter is
//! what a client subscribes to: `+` matches one level, `#` (last) matches any number of
//! levels including none, and neither matches a first level starting with `$` [MQTT-4.7.2-1].
//! `$share/{group}/{filter}` subscribes as a member of a group that shares the messages.

use crate::reason::ReasonCode;

/// Longest topic name or filter: the length prefix is two bytes [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// A topic name must have at least one character.
    #[error("topic name is empty")]
    EmptyName,
    /// A topic filter must have at least one character.
    #[error("topic filter is empty")]
    EmptyFilter,
    /// Topic names and filters must not contain U+0000.
    #[error("topic contains the null character")]
    NullCharacter,
    /// Longer than 65,535 bytes.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// `+` or `#` in a topic name.
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` that is not alone in the last level.
    #[error("'#' must be the whole last level of a topic filter")]
    MultiLevelWildcardMisplaced,
    /// `+` sharing a level with other characters.
    #[error("'+' must be a whole level of a topic filter")]
    SingleLevelWildcardMisplaced,
    /// The share name of `$share/{group}/...` is empty or contains `+` or `#`.
    #[error("shared subscription group name is empty or contains a wildcard")]
    InvalidShareName,
    /// `$share/{group}` without `/` and a topic filter after it.
    #[error("shared subscription has no topic filter after its group name")]
    SharedFilterMissing,
}

impl TopicError {
    /// The rule this error enforces.
    pub fn rule(self) -> &'static str {
        match self {
            TopicError::EmptyName | TopicError::EmptyFilter => "[MQTT-4.7.3-1]",
            TopicError::NullCharacter => "[MQTT-4.7.3-2]",
            TopicError::TooLong => "[MQTT-4.7.3-3]",
            TopicError::WildcardInName => "[MQTT-3.3.2-2]",
            TopicError::MultiLevelWildcardMisplaced => "[MQTT-4.7.1-1]",
            TopicError::SingleLevelWildcardMisplaced => "[MQTT-4.7.1-2]",
            TopicError::InvalidShareName => "[MQTT-4.8.2-1]",
            TopicError::SharedFilterMissing => "[MQTT-4.8.2-2]",
        }
    }

    /// The MQTT 5.0 reason code for a packet carrying this topic.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            TopicError::EmptyName | TopicError::WildcardInName => ReasonCode::TopicNameInvalid,
            TopicError::NullCharacter | TopicError::TooLong => ReasonCode::MalformedPacket,
            _ => ReasonCode::TopicFilterInvalid,
        }
    }
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name (what PUBLISH carries): non-empty, no wildcards.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::EmptyName);
    }
    check_common(topic)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (what SUBSCRIBE carries), including `$share/{group}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::EmptyFilter);
    }
    check_common(filter)?;
    match parse_shared(filter)? {
        Some(shared) => check_levels(shared.filter),
        None => check_levels(filter),
    }
}

fn check_levels(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardMisplaced);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardMisplaced);
        }
    }
    Ok(())
}

/// Whether `filter` contains `+` or `#`.
pub fn has_wildcards(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// A parsed `$share/{group}/{filter}` subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name: members of the same group share the messages.
    pub group: &'a str,
    /// The topic filter the group subscribes to.
    pub filter: &'a str,
}

/// Splits a shared subscription into group and filter. `Ok(None)` for an ordinary filter;
/// an error when it starts with `$share/` but is not well-formed. Only the syntax of the
/// share part is checked here; [`validate_topic_filter`] checks the whole.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let (group, inner) = rest
        .split_once('/')
        .ok_or(TopicError::SharedFilterMissing)?;
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if inner.is_empty() {
        return Err(TopicError::SharedFilterMissing);
    }
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

/// Whether `topic` (a valid topic name) matches `filter` (a valid, non-shared topic filter).
///
/// `#` also matches the parent level (`a/#` matches `a`), and a filter starting with a
/// wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("a/b/c").is_ok());
        assert!(validate_topic_name("/").is_ok());
        assert!(validate_topic_name("$SYS/broker").is_ok());
        assert!(validate_topic_name("with space/ünïcode").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicError::EmptyName));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        assert_eq!(
            validate_topic_name(&"x".repeat(65_536)),
            Err(TopicError::TooLong)
        );
        assert!(validate_topic_name(&"x".repeat(65_535)).is_ok());
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "a/+/c",
            "+/tennis/#",
            "$SYS/#",
            "a//b",
        ] {
            assert!(validate_topic_filter(ok).is_ok(), "{ok}");
        }
        use TopicError::*;
        for (bad, err) in [
            ("", EmptyFilter),
            ("a/#/b", MultiLevelWildcardMisplaced),
            ("a#", MultiLevelWildcardMisplaced),
            ("a/b#", MultiLevelWildcardMisplaced),
            ("##", MultiLevelWildcardMisplaced),
            ("a+", SingleLevelWildcardMisplaced),
            ("a/+b/c", SingleLevelWildcardMisplaced),
            ("++", SingleLevelWildcardMisplaced),
        ] {
            assert_eq!(validate_topic_filter(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$share"), Ok(None));
        assert_eq!(
            parse_shared("$share/g1/a/+"),
            Ok(Some(SharedFilter {
                group: "g1",
                filter: "a/+"
            }))
        );
        assert_eq!(
            parse_shared("$share/g/#"),
            Ok(Some(SharedFilter {
                group: "g",
                filter: "#"
            }))
        );
        assert_eq!(
            parse_shared("$share/"),
            Err(TopicError::SharedFilterMissing)
        );
        assert_eq!(
            parse_shared("$share/g"),
            Err(TopicError::SharedFilterMissing)
        );
        assert_eq!(
            parse_shared("$share/g/"),
            Err(TopicError::SharedFilterMissing)
        );
        assert_eq!(parse_shared("$share//a"), Err(TopicError::InvalidShareName));
        assert_eq!(
            parse_shared("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert!(validate_topic_filter("$share/g/a/#").is_ok());
        assert_eq!(
            validate_topic_filter("$share/g/a#"),
            Err(TopicError::MultiLevelWildcardMisplaced)
        );
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        // §4.7.1.2
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        // §4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // §4.7.2: $-topics and root wildcards
        assert!(!matches("#", "$SYS/broker/clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // exact
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a/b", "a/B"));
    }
}
