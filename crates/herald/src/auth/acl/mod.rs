//! ACLs: what each client may publish, subscribe to and receive.
//!
//! [`Acl`] is an ACL file: mosquitto's `acl_file` format, which it reads unchanged, plus
//! Herald's `%t` placeholder and `tenant` blocks. [`Rules`] are the rules a token or the
//! callout carries for one client ([`super::AclClaim`]), which replace the file's for it.
//! Both answer the same three questions, given [`Who`] asks:
//!
//! - [`Acl::may_publish`]: a PUBLISH to a topic.
//! - [`Acl::may_read`]: a message on a topic reaching the client (each retained message
//!   delivered on a subscription; live messages were checked when it subscribed).
//! - [`Acl::may_subscribe`]: a SUBSCRIBE filter, allowed only if the rules allow every topic
//!   it can match (one read rule covers it, no deny rule meets it); a partly allowed
//!   filter is refused whole. The caller passes a shared subscription's filter without its
//!   `$share/{group}/` prefix.
//!
//! A rule allows a topic when its filter matches it as a subscription would (`+`, `#`
//! including the parent level, a leading wildcard never matching a `$` topic); a check
//! allows when some applicable rule with that access matches and no applicable `deny` rule
//! does. Which rules apply, the file format and how it differs from mosquitto are in
//! docs/operations.md ("ACLs").
//!
//! Rules are split into levels when read; a check walks them against the topic without
//! allocating, placeholders expanded in place. A user's rules are found by one hash look-up
//! (and one more for its tenant's block), so a check looks only at the rules that apply.
//! Both types are immutable, `Send` and `Sync`: a reload builds a new one and swaps it.

mod error;
mod parse;
mod rule;

use std::collections::HashMap;
use std::path::Path;

pub use self::error::{AclError, Problem};
use self::parse::Section;
pub use self::rule::Who;
use self::rule::{Access, Rule, RuleSet, Values};
use super::AclClaim;

/// An ACL file, read and compiled.
#[derive(Debug, Default)]
pub struct Acl {
    /// Rules outside tenant blocks, for every client.
    global: Section,
    /// Each tenant block's rules, for that tenant's clients.
    tenants: HashMap<Box<str>, Section>,
    /// Lines accepted but likely mistakes.
    warnings: Vec<String>,
    /// How many rules there are, for the log.
    len: usize,
}

impl Acl {
    /// Reads an ACL file's text.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let parsed = parse::parse(text).map_err(|(line, problem)| AclError::Line {
            path: None,
            line,
            problem,
        })?;
        Ok(Acl {
            len: parsed.len(),
            global: parsed.global,
            tenants: parsed.tenants,
            warnings: parsed.warnings,
        })
    }

    /// Reads an ACL file's bytes, which must be UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Result<Acl, AclError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Acl::parse(text),
            Err(e) => Err(AclError::Line {
                path: None,
                line: 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count(),
                problem: Problem::NotUtf8,
            }),
        }
    }

    /// Reads the ACL file at `path`.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let bytes = std::fs::read(path).map_err(|source| AclError::Io {
            path: path.to_owned(),
            source,
        })?;
        Acl::from_bytes(&bytes).map_err(|e| match e {
            AclError::Line { line, problem, .. } => AclError::Line {
                path: Some(path.to_owned()),
                line,
                problem,
            },
            other => other,
        })
    }

    /// Lines that were accepted but are likely mistakes (an access word alone as the topic,
    /// a pattern naming no placeholder), one message each, for the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How many rules the file holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file holds no rule (then every check refuses, as in mosquitto).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rule sets that apply to `who`: its own `topic` rules (its user block, or the
    /// anonymous rules) and the patterns, outside tenant blocks and in its tenant's block.
    fn sets(&self, who: Who<'_>) -> impl Iterator<Item = &RuleSet> + Clone {
        let tenant = match who.tenant {
            "" => None,
            _ if self.tenants.is_empty() => None,
            name => self.tenants.get(name),
        };
        [
            self.global.own(who.username),
            Some(&self.global.patterns),
            tenant.and_then(|section| section.own(who.username)),
            tenant.map(|section| &section.patterns),
        ]
        .into_iter()
        .flatten()
    }

    /// Whether `who` may publish to `topic` (a valid topic name): a rule with write access
    /// matches it and no deny rule does.
    pub fn may_publish(&self, who: Who<'_>, topic: &str) -> bool {
        may_topic(self.sets(who), &Values::new(who), topic, true)
    }

    /// Whether a message on `topic` may reach `who`: a rule with read access matches it and
    /// no deny rule does. Asked of each retained message delivered on a subscription.
    pub fn may_read(&self, who: Who<'_>, topic: &str) -> bool {
        may_topic(self.sets(who), &Values::new(who), topic, false)
    }

    /// Whether `who` may subscribe to `filter` (without a `$share/{group}/` prefix): one
    /// rule with read access matches every topic the filter can match, and no deny rule
    /// matches any of them. A filter allowed only in part (`#` when only `a/#` may be read,
    /// `a/#` when `a/secret` is denied) is refused whole. An invalid filter is refused.
    pub fn may_subscribe(&self, who: Who<'_>, filter: &str) -> bool {
        may_filter(self.sets(who), &Values::new(who), filter)
    }
}

/// A token's or the callout's rules for one client, compiled: its `pub` filters with write
/// access, its `sub` filters with read access, its `deny` filters, with `%u`, `%c` and `%t`
/// replaced as in the file's patterns. They replace the ACL file's rules for that client,
/// so an empty claim allows nothing.
#[derive(Debug, Default)]
pub struct Rules {
    set: RuleSet,
}

impl Rules {
    /// Compiles a claim, or says which entry is not a valid topic filter.
    pub fn from_claim(claim: &AclClaim) -> Result<Rules, AclError> {
        let mut set = RuleSet::default();
        for (field, filters, access) in [
            ("pub", &claim.publish, Access::Write),
            ("sub", &claim.subscribe, Access::Read),
            ("deny", &claim.deny, Access::Deny),
        ] {
            for (index, filter) in filters.iter().enumerate() {
                let rule = Rule::compile(filter, true).map_err(|error| AclError::Claim {
                    field,
                    index,
                    problem: Problem::InvalidFilter {
                        filter: filter.clone(),
                        error,
                    },
                })?;
                set.push(rule, access);
            }
        }
        Ok(Rules { set })
    }

    /// As [`Acl::may_publish`], with these rules.
    pub fn may_publish(&self, who: Who<'_>, topic: &str) -> bool {
        may_topic(std::iter::once(&self.set), &Values::new(who), topic, true)
    }

    /// As [`Acl::may_read`], with these rules.
    pub fn may_read(&self, who: Who<'_>, topic: &str) -> bool {
        may_topic(std::iter::once(&self.set), &Values::new(who), topic, false)
    }

    /// As [`Acl::may_subscribe`], with these rules.
    pub fn may_subscribe(&self, who: Who<'_>, filter: &str) -> bool {
        may_filter(std::iter::once(&self.set), &Values::new(who), filter)
    }
}

/// A topic check over the sets that apply: denials first, then grants.
fn may_topic<'a>(
    sets: impl Iterator<Item = &'a RuleSet> + Clone,
    values: &Values<'_>,
    topic: &str,
    write: bool,
) -> bool {
    !sets.clone().any(|set| set.denies_topic(values, topic))
        && sets
            .into_iter()
            .any(|set| set.grants_topic(values, topic, write))
}

/// A subscription check over the sets that apply.
fn may_filter<'a>(
    sets: impl Iterator<Item = &'a RuleSet> + Clone,
    values: &Values<'_>,
    filter: &str,
) -> bool {
    mqtt_codec::topic::validate_topic_filter(filter).is_ok()
        && !sets.clone().any(|set| set.denies_filter(values, filter))
        && sets
            .into_iter()
            .any(|set| set.grants_filter(values, filter))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
