//! MQTT topics as NATS subjects, and back: one topic level is one subject token, the tenant
//! the first token after the cluster's prefix, so that NATS's own wildcards do the work of
//! MQTT's (`+` is `*`; `#` is `>` and its parent level).
//!
//! A NATS token may not be empty nor hold `.`, `*`, `>` or white space; an MQTT level may be
//! empty and hold anything but `/`, `+` and `#` (and those only as whole levels of a
//! filter). So a level made only of [`SAFE`] characters is its own token, and any other
//! level (an empty one, one with a dot, a space, a `*`, non-ASCII text) is `~` followed by
//! its UTF-8 bytes in unpadded base64url, whose alphabet is safe. `~` is not safe, so a
//! token starting with it is always an encoded one: the encoding is one-to-one and
//! reversible, and common topics (`sensors/room-1/temp`) stay readable on the wire
//! (`herald.m.acme.sensors.room-1.temp`).

use data_encoding::BASE64URL_NOPAD;

/// Whether `c` stands for itself in a token: printable ASCII but the characters NATS gives
/// a meaning (`.`, `*`, `>`), the escape (`~`), and `$`, so that no token looks like one of
/// NATS's own (`$JS`, `$SYS`) whatever the prefix.
pub fn safe(c: u8) -> bool {
    c.is_ascii_graphic() && !matches!(c, b'.' | b'*' | b'>' | b'~' | b'$')
}

/// A level (or a tenant name) as one token.
pub fn token(level: &str, out: &mut String) {
    if !level.is_empty() && level.bytes().all(safe) {
        out.push_str(level);
    } else {
        out.push('~');
        BASE64URL_NOPAD.encode_append(level.as_bytes(), out);
    }
}

/// A token back into the level it stands for; `None` for one `token` never makes.
pub fn level(token: &str) -> Option<String> {
    match token.strip_prefix('~') {
        Some(encoded) => {
            let bytes = BASE64URL_NOPAD.decode(encoded.as_bytes()).ok()?;
            let level = String::from_utf8(bytes).ok()?;
            // Canonical only: a level that is its own token is never encoded.
            (level.is_empty() || !level.bytes().all(safe)).then_some(level)
        }
        None => (!token.is_empty() && token.bytes().all(safe)).then(|| token.to_string()),
    }
}

/// Where a cluster's messages go: `<prefix>.m.<tenant>.<levels...>`; QoS 1/2 ones first
/// to the stream's `<prefix>.j.<tenant>.<levels...>`, which republishes them there.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// `<prefix>.m.`
    messages: String,
    /// `<prefix>.j.`
    stream: String,
}

impl Subjects {
    /// The subjects under `prefix` (one or more safe tokens joined by dots; checked by the
    /// configuration).
    pub fn new(prefix: &str) -> Subjects {
        Subjects {
            messages: format!("{prefix}.m."),
            stream: format!("{prefix}.j."),
        }
    }

    /// The subject of a message on `topic` in `tenant`.
    pub fn topic(&self, tenant: &str, topic: &str) -> String {
        Self::under(&self.messages, tenant, topic)
    }

    /// Where every message subject of `tenant` starts: `<prefix>.m.<tenant>.`.
    pub fn root(&self, tenant: &str) -> String {
        let mut s = String::with_capacity(self.messages.len() + tenant.len() + 2);
        s.push_str(&self.messages);
        token(tenant, &mut s);
        s.push('.');
        s
    }

    /// The stream's subject of a QoS 1/2 message on `topic` in `tenant` (republished to
    /// `topic`'s).
    pub fn stream(&self, tenant: &str, topic: &str) -> String {
        Self::under(&self.stream, tenant, topic)
    }

    /// The tenant and topic of a subject of the stream's; `None` for another.
    pub fn parse_stream(&self, subject: &str) -> Option<(String, String)> {
        let rest = subject.strip_prefix(&self.stream)?;
        let messages = format!("{}{rest}", self.messages);
        self.parse(&messages)
    }

    fn under(base: &str, tenant: &str, topic: &str) -> String {
        let mut s = String::with_capacity(base.len() + tenant.len() + topic.len() + 8);
        s.push_str(base);
        token(tenant, &mut s);
        for level in topic.split('/') {
            s.push('.');
            token(level, &mut s);
        }
        s
    }

    /// The tenant and topic of a message subject; `None` for a subject not made by `topic`.
    pub fn parse(&self, subject: &str) -> Option<(String, String)> {
        let rest = subject.strip_prefix(&self.messages)?;
        let mut tokens = rest.split('.');
        let tenant = level(tokens.next()?)?;
        let mut topic = String::with_capacity(rest.len());
        for (i, t) in tokens.enumerate() {
            if i > 0 {
                topic.push('/');
            }
            topic.push_str(&level(t)?);
        }
        // A topic has at least one level (it may be empty: the topic "" is not valid MQTT,
        // but "/" is two empty levels).
        (rest.contains('.')).then_some((tenant, topic))
    }

    /// The subjects a node subscribes to for a (not shared) topic filter of `tenant`: one,
    /// or two for a filter ending in `#`, which matches its parent level too (`a/#`
    /// matches `a`): `a` and `a.>`. A filter that is only `#` is `>` under the tenant.
    pub fn filter(&self, tenant: &str, filter: &str) -> Vec<String> {
        let mut base = String::with_capacity(self.messages.len() + tenant.len() + filter.len() + 8);
        base.push_str(&self.messages);
        token(tenant, &mut base);
        let mut levels = filter.split('/').peekable();
        let mut parent_only = false;
        while let Some(l) = levels.next() {
            base.push('.');
            match l {
                "+" => base.push('*'),
                "#" if levels.peek().is_none() => {
                    base.push('>');
                    parent_only = true;
                }
                l => token(l, &mut base),
            }
        }
        if !parent_only || filter == "#" {
            // `#` alone is every topic of the tenant: `>` (a topic has a level at least).
            return vec![base];
        }
        let parent = base[..base.len() - 2].to_string();
        vec![parent, base]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subjects() -> Subjects {
        Subjects::new("herald")
    }

    #[test]
    fn plain_topics_stay_readable() {
        let s = subjects();
        assert_eq!(
            s.topic("acme", "sensors/room-1/temp"),
            "herald.m.acme.sensors.room-1.temp"
        );
        assert_eq!(s.topic("", "a"), "herald.m.~.a", "the default tenant");
        assert_eq!(s.topic("t", "a.b/c d"), "herald.m.t.~YS5i.~YyBk");
        assert_eq!(s.topic("t", "/"), "herald.m.t.~.~", "two empty levels");
        assert_eq!(s.topic("t", "$SYS/x"), "herald.m.t.~JFNZUw.x");
    }

    #[test]
    fn filters_use_nats_wildcards() {
        let s = subjects();
        assert_eq!(s.filter("t", "a/+/c"), ["herald.m.t.a.*.c"]);
        assert_eq!(
            s.filter("t", "a/b/#"),
            ["herald.m.t.a.b", "herald.m.t.a.b.>"]
        );
        assert_eq!(s.filter("t", "#"), ["herald.m.t.>"]);
        assert_eq!(s.filter("", "+"), ["herald.m.~.*"]);
        assert_eq!(s.filter("t", "+/#"), ["herald.m.t.*", "herald.m.t.*.>"]);
        assert_eq!(
            s.filter("t", "a*b/#"),
            ["herald.m.t.~YSpi", "herald.m.t.~YSpi.>"]
        );
    }

    #[test]
    fn junk_is_not_a_topic() {
        let s = subjects();
        for junk in [
            "herald.m.t",
            "other.m.t.a",
            "herald.m.t.a..b",
            "herald.m.t.~YQ",
            "herald.m.t.~!!",
            "herald.m.t.a$b",
            "herald.m.t.~_w",
        ] {
            assert_eq!(s.parse(junk), None, "{junk}");
        }
    }

    /// Whether MQTT `filter` matches `topic` (the spec's rules, `$` topics aside).
    fn mqtt_matches(filter: &str, topic: &str) -> bool {
        let (f, t): (Vec<&str>, Vec<&str>) =
            (filter.split('/').collect(), topic.split('/').collect());
        for (i, level) in f.iter().enumerate() {
            match *level {
                "#" => return true,
                "+" => {
                    if i >= t.len() {
                        return false;
                    }
                }
                l => {
                    if t.get(i) != Some(&l) {
                        return false;
                    }
                }
            }
        }
        f.len() == t.len()
    }

    /// Whether NATS `pattern` matches `subject`.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let (p, s): (Vec<&str>, Vec<&str>) =
            (pattern.split('.').collect(), subject.split('.').collect());
        for (i, tok) in p.iter().enumerate() {
            match *tok {
                ">" => return s.len() > i,
                "*" => {
                    if i >= s.len() {
                        return false;
                    }
                }
                t => {
                    if s.get(i) != Some(&t) {
                        return false;
                    }
                }
            }
        }
        p.len() == s.len()
    }

    fn level_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_-]{1,6}",
            "[a-z.* >~$]{0,4}",
            "\\PC{0,4}".prop_map(|s| s.replace(['/', '+', '#'], "")),
            Just(String::new()),
        ]
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(level_strategy(), 1..5).prop_map(|l| l.join("/"))
    }

    proptest! {
        #[test]
        fn every_topic_comes_back(tenant in "[a-z0-9_-]{0,8}", topic in topic_strategy()) {
            let s = subjects();
            let subject = s.topic(&tenant, &topic);
            for t in subject.split('.') {
                prop_assert!(!t.is_empty() && !t.contains([' ', '*', '>']), "{subject}");
            }
            prop_assert_eq!(s.parse(&subject), Some((tenant.clone(), topic.clone())));
            let stream = s.stream(&tenant, &topic);
            prop_assert_eq!(s.parse(&stream), None);
            prop_assert_eq!(s.parse_stream(&stream), Some((tenant, topic)));
        }

        #[test]
        fn nats_matches_where_mqtt_does(
            topic in topic_strategy(),
            pick in prop::collection::vec(0u8..4, 1..5),
        ) {
            // A filter made from the topic: some levels replaced by `+`, maybe cut at `#`.
            let levels: Vec<&str> = topic.split('/').collect();
            let mut filter = Vec::new();
            for (i, how) in pick.iter().enumerate() {
                match (how, levels.get(i)) {
                    (0, Some(_)) => filter.push("+".to_string()),
                    (1, _) => { filter.push("#".to_string()); break; }
                    (_, Some(l)) => filter.push((*l).to_string()),
                    (_, None) => filter.push("x".to_string()),
                }
            }
            let filter = filter.join("/");
            let s = subjects();
            let subject = s.topic("t", &topic);
            let by_nats = s.filter("t", &filter).iter().any(|p| nats_matches(p, &subject));
            prop_assert_eq!(by_nats, mqtt_matches(&filter, &topic), "{} {}", filter, topic);
            // Another tenant's subjects never match.
            prop_assert!(!s.filter("u", &filter).iter().any(|p| nats_matches(p, &subject)));
        }
    }
}
