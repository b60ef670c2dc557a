//! Which topics and filters are `$SYS/` ones, and whether a filter can match the client
//! events (`$SYS/brokers/<node>/clients/...`): the subscription index counts such filters
//! per tenant, so that nothing is built for `$SYS/` while nobody subscribes to it.

/// Whether `topic` (a topic name or a filter) is in the `$SYS` tree: its first level is
/// `$SYS`. Only Herald publishes there.
pub fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Whether the filter `filter` (without a `$share/` prefix) can match a client event's
/// topic, `$SYS/brokers/<node>/...`: `$SYS/#`, `$SYS/+/...`, `$SYS/brokers/...`.
pub fn may_match_events(filter: &str) -> bool {
    let mut levels = filter.split('/');
    if levels.next() != Some("$SYS") {
        return false;
    }
    match levels.next() {
        Some("#") => true,
        // An event's topic has more levels after `brokers`.
        Some("brokers" | "+") => levels.next().is_some(),
        _ => false,
    }
}

/// `s` as one topic level: `+`, `#` and `%` percent-encoded (a topic name may not hold a
/// wildcard), and `/` too when `slash` (a tenant's name is one level; a client id keeps its
/// `/`, as EMQX's topics do).
pub fn level(s: &str, slash: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| matches!(c, '+' | '#' | '%') || (slash && c == '/');
    if !s.contains(special) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '#' => out.push_str("%23"),
            '%' => out.push_str("%25"),
            '/' if slash => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_topics_and_event_filters() {
        assert!(is_sys("$SYS"));
        assert!(is_sys("$SYS/broker/uptime"));
        assert!(!is_sys("$SYSTEM/x"));
        assert!(!is_sys("a/$SYS"));
        for f in [
            "$SYS/#",
            "$SYS/+/x",
            "$SYS/brokers/+/clients/#",
            "$SYS/brokers/#",
        ] {
            assert!(may_match_events(f), "{f}");
        }
        for f in [
            "$SYS/broker/#",
            "$SYS",
            "$SYS/brokers",
            "$SYS/+",
            "#",
            "$SYS/herald/#",
        ] {
            assert!(!may_match_events(f), "{f}");
        }
    }

    #[test]
    fn levels_never_hold_wildcards() {
        assert_eq!(level("dev-1", false), "dev-1");
        assert_eq!(level("acme/dev", false), "acme/dev");
        assert_eq!(level("acme/dev", true), "acme%2Fdev");
        assert_eq!(level("a+b#c%d", false), "a%2Bb%23c%25d");
        for s in ["a+b", "#", "x/+/y"] {
            let l = level(s, true);
            assert!(mqtt_codec::topic::validate_topic_name(&l).is_ok(), "{l}");
            assert!(!l.contains('/'));
        }
    }
}
