//! One compiled rule and the three questions asked of it: does it match a topic, does it
//! cover a subscription filter (every topic the filter matches, it matches), does it
//! intersect one (some topic matches both).
//!
//! A rule is split into levels once, when it is read. A level that names a placeholder
//! (`%u`, `%c`, `%t`) is kept as parts (text and placeholders) and expanded while it is
//! compared, without building the substituted string: the expansion is walked piece by
//! piece. A value may contain `/` (mosquitto substitutes text, so `%u` = `acme/alice`
//! spans two levels), which is why an expanded level can start in one part and end in
//! another.

use mqtt_codec::TopicError;
use mqtt_codec::topic::MAX_TOPIC_LEN;

/// Who is asking: the values the placeholders stand for, and which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who<'a> {
    /// The username it acts as (`None`: an anonymous client, which `%u` never matches).
    pub username: Option<&'a str>,
    /// Its client id (`%c`).
    pub client_id: &'a str,
    /// Its tenant (`%t`); "" is the default tenant, which `%t` never matches.
    pub tenant: &'a str,
}

/// What a rule allows: reading (subscribing, receiving), writing (publishing), or nothing
/// at all (`deny`, which overrides every grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `readwrite`, and a rule without an access word.
    ReadWrite,
    /// `deny`: neither, whatever other rules grant.
    Deny,
}

impl Access {
    /// The access word of an ACL file.
    pub(super) fn from_word(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// A placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    /// `%u`.
    User,
    /// `%c`.
    Client,
    /// `%t`.
    Tenant,
}

impl Var {
    /// Its bit in [`Rule::uses`] and [`Values`]' masks.
    fn bit(self) -> u8 {
        match self {
            Var::User => 1,
            Var::Client => 2,
            Var::Tenant => 4,
        }
    }
}

/// A piece of a level that names placeholders.
#[derive(Debug)]
enum Part {
    /// Text kept as written.
    Text(Box<str>),
    /// A placeholder, replaced by its value.
    Var(Var),
}

/// One level of a rule as written.
#[derive(Debug)]
enum Seg {
    /// A level without wildcard or placeholder.
    Text(Box<str>),
    /// `+`.
    Plus,
    /// `#` (always the last level).
    Hash,
    /// A level naming placeholders, maybe with text around them (`dev-%c`).
    Template(Box<[Part]>),
}

/// A rule's filter, split into levels.
#[derive(Debug)]
pub(super) struct Rule {
    /// Its levels.
    segs: Box<[Seg]>,
    /// The placeholders it names (bits of [`Var::bit`]): a rule naming a value the client
    /// lacks does not apply to it; one naming a value with a wildcard character is refused.
    uses: u8,
}

impl Rule {
    /// Compiles a topic filter. With `placeholders`, `%u`, `%c` and `%t` stand for the
    /// client's values (every other `%` is text); without, `%` is plain text as in
    /// mosquitto's `topic` lines.
    pub(super) fn compile(filter: &str, placeholders: bool) -> Result<Rule, TopicError> {
        if filter.is_empty() {
            return Err(TopicError::EmptyFilter);
        }
        if filter.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        if filter.contains('\0') {
            return Err(TopicError::NullCharacter);
        }
        let mut segs = Vec::new();
        let mut uses = 0;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            let seg = match level {
                "#" if levels.peek().is_none() => Seg::Hash,
                "+" => Seg::Plus,
                _ if level.contains('#') => return Err(TopicError::MultiLevelWildcardMisplaced),
                _ if level.contains('+') => return Err(TopicError::SingleLevelWildcardMisplaced),
                _ => match placeholders.then(|| template(level)).flatten() {
                    Some(parts) => {
                        for part in &parts {
                            if let Part::Var(var) = part {
                                uses |= var.bit();
                            }
                        }
                        Seg::Template(parts.into_boxed_slice())
                    }
                    None => Seg::Text(level.into()),
                },
            };
            segs.push(seg);
        }
        Ok(Rule {
            segs: segs.into_boxed_slice(),
            uses,
        })
    }

    /// Whether it names `%u`, `%c` or `%t`.
    pub(super) fn names_placeholder(&self) -> bool {
        self.uses != 0
    }

    /// Its levels, expanded for `values`.
    fn levels<'a>(&'a self, values: &'a Values<'a>) -> Levels<'a> {
        Levels {
            segs: &self.segs,
            values,
            template: None,
        }
    }

    /// How it stands for a client with `values`.
    fn applies(&self, values: &Values<'_>) -> Applies {
        if self.uses & values.missing != 0 {
            Applies::No
        } else if self.uses & values.unsafe_ != 0 {
            Applies::Unsafe
        } else {
            Applies::Yes
        }
    }
}

/// Splits a level into text and placeholders; `None` if it names none.
fn template(level: &str) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut text_from = 0;
    let bytes = level.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let var = match (bytes[i], bytes[i + 1]) {
            (b'%', b'u') => Var::User,
            (b'%', b'c') => Var::Client,
            (b'%', b't') => Var::Tenant,
            _ => {
                i += 1;
                continue;
            }
        };
        if text_from < i {
            parts.push(Part::Text(level[text_from..i].into()));
        }
        parts.push(Part::Var(var));
        i += 2;
        text_from = i;
    }
    if parts.is_empty() {
        return None;
    }
    if text_from < level.len() {
        parts.push(Part::Text(level[text_from..].into()));
    }
    Some(parts)
}

/// How a rule stands for one client.
enum Applies {
    /// Its placeholders have values.
    Yes,
    /// It names a value the client lacks (`%u` for an anonymous client, `%t` in the default
    /// tenant): it neither grants nor denies anything.
    No,
    /// It names a value containing `+` or `#`, which would turn into a wildcard: as a grant
    /// it grants nothing, as a deny it denies everything.
    Unsafe,
}

/// A client's values for the placeholders, and which of them are missing or unsafe (bits
/// of [`Var::bit`]); computed once per check.
#[derive(Debug)]
pub(super) struct Values<'a> {
    username: &'a str,
    client_id: &'a str,
    tenant: &'a str,
    missing: u8,
    unsafe_: u8,
}

impl<'a> Values<'a> {
    /// The values of `who`.
    pub(super) fn new(who: Who<'a>) -> Values<'a> {
        let wild = |s: &str| s.bytes().any(|b| b == b'+' || b == b'#');
        let username = who.username.unwrap_or("");
        let mut missing = 0;
        if who.username.is_none() {
            missing |= Var::User.bit();
        }
        if who.tenant.is_empty() {
            missing |= Var::Tenant.bit();
        }
        let mut unsafe_ = 0;
        for (var, value) in [
            (Var::User, username),
            (Var::Client, who.client_id),
            (Var::Tenant, who.tenant),
        ] {
            if wild(value) {
                unsafe_ |= var.bit();
            }
        }
        Values {
            username,
            client_id: who.client_id,
            tenant: who.tenant,
            missing,
            unsafe_,
        }
    }

    fn text(&self, part: &'a Part) -> &'a str {
        match part {
            Part::Text(text) => text,
            Part::Var(Var::User) => self.username,
            Part::Var(Var::Client) => self.client_id,
            Part::Var(Var::Tenant) => self.tenant,
        }
    }
}

/// A position in a template's expansion: a part and a byte offset in its text.
#[derive(Debug, Clone, Copy)]
struct Cursor<'a> {
    parts: &'a [Part],
    part: usize,
    offset: usize,
}

/// One level of a rule, expanded.
#[derive(Debug, Clone, Copy)]
enum Level<'a> {
    Plus,
    Hash,
    /// Written as is.
    Text(&'a str),
    /// From a template: the expansion from the cursor to the next `/` or the template's end.
    Expanded(Cursor<'a>, &'a Values<'a>),
}

impl<'a> Level<'a> {
    /// The pieces of an expanded level's text, in order (a level spans several parts).
    fn pieces(cursor: Cursor<'a>, values: &'a Values<'a>) -> impl Iterator<Item = &'a str> {
        let mut at = Some(cursor);
        std::iter::from_fn(move || {
            let c = at?;
            let part = c.parts.get(c.part)?;
            let text = values.text(part).get(c.offset..).unwrap_or("");
            match text.find('/') {
                Some(end) => {
                    at = None;
                    Some(&text[..end])
                }
                None => {
                    at = Some(Cursor {
                        part: c.part + 1,
                        offset: 0,
                        ..c
                    });
                    Some(text)
                }
            }
        })
    }

    /// Whether this is a text level equal to `other`.
    fn is(self, other: &str) -> bool {
        match self {
            Level::Text(text) => text == other,
            Level::Expanded(cursor, values) => {
                let mut rest = other;
                for piece in Level::pieces(cursor, values) {
                    match rest.strip_prefix(piece) {
                        Some(after) => rest = after,
                        None => return false,
                    }
                }
                rest.is_empty()
            }
            Level::Plus | Level::Hash => false,
        }
    }

    /// Whether this is a text level starting with `$`.
    fn is_dollar(self) -> bool {
        match self {
            Level::Text(text) => text.starts_with('$'),
            Level::Expanded(cursor, values) => Level::pieces(cursor, values)
                .find(|piece| !piece.is_empty())
                .is_some_and(|piece| piece.starts_with('$')),
            Level::Plus | Level::Hash => false,
        }
    }
}

/// The levels of a rule, expanded.
#[derive(Debug, Clone)]
struct Levels<'a> {
    segs: &'a [Seg],
    values: &'a Values<'a>,
    /// Inside a template whose expansion goes on past a `/`: where the next level starts.
    template: Option<Cursor<'a>>,
}

impl<'a> Levels<'a> {
    /// The level starting at `cursor`, and where the next one starts in the same template.
    fn expand(&mut self, cursor: Cursor<'a>) -> Level<'a> {
        let mut c = cursor;
        self.template = None;
        while let Some(part) = c.parts.get(c.part) {
            let text = self.values.text(part);
            if let Some(slash) = text.get(c.offset..).and_then(|t| t.find('/')) {
                self.template = Some(Cursor {
                    offset: c.offset + slash + 1,
                    ..c
                });
                break;
            }
            c.part += 1;
            c.offset = 0;
        }
        Level::Expanded(cursor, self.values)
    }
}

impl<'a> Iterator for Levels<'a> {
    type Item = Level<'a>;

    fn next(&mut self) -> Option<Level<'a>> {
        if let Some(cursor) = self.template {
            return Some(self.expand(cursor));
        }
        let (seg, rest) = self.segs.split_first()?;
        self.segs = rest;
        Some(match seg {
            Seg::Plus => Level::Plus,
            Seg::Hash => Level::Hash,
            Seg::Text(text) => Level::Text(text),
            Seg::Template(parts) => self.expand(Cursor {
                parts,
                part: 0,
                offset: 0,
            }),
        })
    }
}

/// A level of a subscription filter.
#[derive(Debug, Clone, Copy)]
enum FilterLevel<'a> {
    Plus,
    Hash,
    Text(&'a str),
}

fn filter_levels(filter: &str) -> impl Iterator<Item = FilterLevel<'_>> {
    filter.split('/').map(|level| match level {
        "+" => FilterLevel::Plus,
        "#" => FilterLevel::Hash,
        text => FilterLevel::Text(text),
    })
}

/// Whether the rule's levels match `topic` (a topic name). A rule starting with a wildcard
/// does not match a topic starting with `$` [MQTT-4.7.2-1], as mosquitto's ACLs do not.
fn matches(mut rule: Levels<'_>, topic: &str) -> bool {
    let dollar = topic.starts_with('$');
    let mut topic = topic.split('/');
    let mut first = true;
    loop {
        match (rule.next(), topic.next()) {
            (Some(Level::Hash), _) => return !(first && dollar),
            (Some(Level::Plus), Some(_)) if !(first && dollar) => {}
            (Some(level), Some(name)) if level.is(name) => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether every topic `filter` matches, the rule's levels match too. Exact for one rule:
/// `#` matches its parent level, a leading wildcard no `$` topic (so `+/#` covers `#`).
fn covers(mut rule: Levels<'_>, filter: &str) -> bool {
    let dollar = filter.starts_with('$');
    let mut filter = filter_levels(filter);
    let mut first = true;
    loop {
        match (rule.next(), filter.next()) {
            (Some(Level::Hash), _) => return !(first && dollar),
            // `#` first matches every topic not starting with `$`, with at least one level.
            (Some(Level::Plus), Some(FilterLevel::Hash)) => {
                return first && matches!(rule.next(), Some(Level::Hash));
            }
            (Some(Level::Plus), Some(FilterLevel::Plus)) => {}
            (Some(Level::Plus), Some(FilterLevel::Text(_))) if !(first && dollar) => {}
            (Some(level), Some(FilterLevel::Text(text))) if level.is(text) => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether some topic matches both the rule's levels and `filter`.
fn intersects(mut rule: Levels<'_>, filter: &str) -> bool {
    let dollar = filter.starts_with('$');
    let mut filter = filter_levels(filter);
    let mut first = true;
    loop {
        match (rule.next(), filter.next()) {
            (Some(Level::Hash), _) => return !(first && dollar),
            (Some(level), Some(FilterLevel::Hash)) => return !(first && level.is_dollar()),
            (None, Some(FilterLevel::Hash)) => return true,
            (Some(Level::Plus), Some(FilterLevel::Plus)) => {}
            (Some(Level::Plus), Some(FilterLevel::Text(_))) if !(first && dollar) => {}
            (Some(level), Some(FilterLevel::Plus)) if !(first && level.is_dollar()) => {}
            (Some(level), Some(FilterLevel::Text(text))) if level.is(text) => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// A rule with what it allows.
#[derive(Debug)]
struct Grant {
    rule: Rule,
    access: Access,
}

/// Rules that apply together (a user's block, a section's patterns, a token's claim):
/// grants and denials kept apart, so that a check first looks for a denial.
#[derive(Debug, Default)]
pub(super) struct RuleSet {
    grants: Vec<Grant>,
    denials: Vec<Rule>,
}

impl RuleSet {
    /// Adds a rule.
    pub(super) fn push(&mut self, rule: Rule, access: Access) {
        match access {
            Access::Deny => self.denials.push(rule),
            _ => self.grants.push(Grant { rule, access }),
        }
    }

    /// How many rules it holds.
    pub(super) fn len(&self) -> usize {
        self.grants.len() + self.denials.len()
    }

    /// Whether a denial matches `topic`.
    pub(super) fn denies_topic(&self, values: &Values<'_>, topic: &str) -> bool {
        self.denials.iter().any(|rule| match rule.applies(values) {
            Applies::Yes => matches(rule.levels(values), topic),
            Applies::No => false,
            Applies::Unsafe => true,
        })
    }

    /// Whether a grant with `write` (else read) access matches `topic`.
    pub(super) fn grants_topic(&self, values: &Values<'_>, topic: &str, write: bool) -> bool {
        self.grants.iter().any(|grant| {
            let access = if write {
                grant.access.writes()
            } else {
                grant.access.reads()
            };
            access
                && matches!(grant.rule.applies(values), Applies::Yes)
                && matches(grant.rule.levels(values), topic)
        })
    }

    /// Whether a denial matches some topic `filter` matches.
    pub(super) fn denies_filter(&self, values: &Values<'_>, filter: &str) -> bool {
        self.denials.iter().any(|rule| match rule.applies(values) {
            Applies::Yes => intersects(rule.levels(values), filter),
            Applies::No => false,
            Applies::Unsafe => true,
        })
    }

    /// Whether one read grant matches every topic `filter` matches.
    pub(super) fn grants_filter(&self, values: &Values<'_>, filter: &str) -> bool {
        self.grants.iter().any(|grant| {
            grant.access.reads()
                && matches!(grant.rule.applies(values), Applies::Yes)
                && covers(grant.rule.levels(values), filter)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const WHO: Who<'static> = Who {
        username: Some("acme/alice"),
        client_id: "dev-1",
        tenant: "acme",
    };

    fn check(rule: &str, f: fn(Levels<'_>, &str) -> bool, subject: &str) -> bool {
        let rule = Rule::compile(rule, true).unwrap();
        let values = Values::new(WHO);
        f(rule.levels(&values), subject)
    }

    #[test]
    fn templates_expand_across_levels() {
        assert!(check("u/%u/#", matches, "u/acme/alice/x"));
        assert!(check("u/%u", matches, "u/acme/alice"));
        assert!(!check("u/%u", matches, "u/acme"));
        assert!(!check("u/%u", matches, "u/acme/alice/x"));
        assert!(check("d/x-%c-y/z", matches, "d/x-dev-1-y/z"));
        assert!(!check("d/x-%c-y/z", matches, "d/x-dev-1-/z"));
        assert!(check("%t/%u/%c", matches, "acme/acme/alice/dev-1"));
        assert!(check("a/%u/+/%c", covers, "a/acme/alice/+/dev-1"));
        assert!(!check("a/%u/+/%c", covers, "a/acme/+/+/dev-1"));
        assert!(check("a/%u/+/%c", intersects, "a/acme/+/+/dev-1"));
        assert!(!check("a/%u/b", intersects, "a/acme/bob/#"));
        assert!(check("a/%u/b", intersects, "a/acme/#"));
        assert!(check("a/%u/b", intersects, "a/+/alice/b"));
    }

    #[test]
    fn percent_without_a_known_letter_is_text() {
        assert!(check("a/%x/100%", matches, "a/%x/100%"));
        assert!(check("a/%%u", matches, "a/%acme/alice"));
        let rule = Rule::compile("a/%u", false).unwrap();
        let values = Values::new(WHO);
        assert!(matches(rule.levels(&values), "a/%u"));
        assert!(!matches(rule.levels(&values), "a/acme/alice"));
    }

    #[test]
    fn dollar_topics_and_leading_wildcards() {
        assert!(!check("#", matches, "$SYS/x"));
        assert!(!check("+/x", matches, "$SYS/x"));
        assert!(check("$SYS/#", matches, "$SYS/x"));
        assert!(check("a/+", matches, "a/$x"));
        assert!(!check("#", covers, "$SYS/#"));
        assert!(check("+/#", covers, "#"));
        assert!(check("+/#", covers, "a/#"));
        assert!(!check("+/+/#", covers, "#"));
        assert!(!check("a/+/#", covers, "a/#"));
        assert!(check("a/+/#", covers, "a/+/+"));
        assert!(!check("#", intersects, "$SYS/#"));
        assert!(!check("$SYS/#", intersects, "#"));
        assert!(!check("$SYS/#", intersects, "+/x"));
        assert!(check("+/x", intersects, "#"));
        assert!(check("a/b", intersects, "a/#"));
        assert!(check("a/#", intersects, "a"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        for (filter, error) in [
            ("", TopicError::EmptyFilter),
            ("a/#/b", TopicError::MultiLevelWildcardMisplaced),
            ("a#", TopicError::MultiLevelWildcardMisplaced),
            ("a+", TopicError::SingleLevelWildcardMisplaced),
            ("a/+b/c", TopicError::SingleLevelWildcardMisplaced),
            ("a\0", TopicError::NullCharacter),
        ] {
            assert_eq!(Rule::compile(filter, true).err(), Some(error), "{filter:?}");
        }
    }
}
