//! Reading an ACL file: mosquitto's `acl_file` lines, and Herald's `tenant` lines.

use std::collections::HashMap;

use super::error::Problem;
use super::rule::{Access, Rule, RuleSet};

/// The rules of one scope: the whole file outside tenant blocks, or one tenant's blocks.
#[derive(Debug, Default)]
pub(super) struct Section {
    /// `topic` lines before any `user` line: clients without a username.
    pub(super) anonymous: RuleSet,
    /// `topic` lines after `user NAME`, by username (repeated blocks are merged).
    pub(super) users: HashMap<Box<str>, RuleSet>,
    /// `pattern` lines: every client of the scope.
    pub(super) patterns: RuleSet,
}

impl Section {
    /// The `topic` rules of a client with `username`: the anonymous ones, or its user
    /// block's (a client with a username but no block has none, as in mosquitto).
    pub(super) fn own(&self, username: Option<&str>) -> Option<&RuleSet> {
        match username {
            None => Some(&self.anonymous),
            Some(_) if self.users.is_empty() => None,
            Some(name) => self.users.get(name),
        }
    }

    fn len(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + self.users.values().map(RuleSet::len).sum::<usize>()
    }
}

/// A whole file, read.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    /// Rules outside tenant blocks (before the first `tenant` line).
    pub(super) global: Section,
    /// Each tenant block's rules, by tenant (repeated blocks are merged).
    pub(super) tenants: HashMap<Box<str>, Section>,
    /// Lines that are accepted but are likely mistakes, for the log.
    pub(super) warnings: Vec<String>,
}

impl Parsed {
    /// How many rules the file holds.
    pub(super) fn len(&self) -> usize {
        self.global.len() + self.tenants.values().map(Section::len).sum::<usize>()
    }
}

/// The first word of `text` (up to a space or a tab) and the rest, without the blanks
/// between them.
fn split_word(text: &str) -> (&str, &str) {
    match text.find([' ', '\t']) {
        Some(at) => (&text[..at], text[at..].trim_start_matches([' ', '\t'])),
        None => (text, ""),
    }
}

/// Reads an ACL file, or says on which line (from 1) it is wrong and why.
pub(super) fn parse(text: &str) -> Result<Parsed, (usize, Problem)> {
    let mut parsed = Parsed::default();
    let mut user: Option<&str> = None;
    let mut tenant: Option<&str> = None;
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |problem| Err((number, problem));
        let (keyword, rest) = split_word(line);
        match keyword {
            "topic" | "pattern" => {
                let pattern = keyword == "pattern";
                if rest.is_empty() {
                    return fail(Problem::MissingTopic(if pattern {
                        "pattern"
                    } else {
                        "topic"
                    }));
                }
                let (first, after) = split_word(rest);
                let (access, filter) = if after.is_empty() {
                    if Access::from_word(first).is_some() {
                        parsed.warnings.push(format!(
                            "line {number}: {keyword} {first:?} is read as the topic {first:?} \
                             with readwrite access (an access word alone is the topic, as in \
                             mosquitto)"
                        ));
                    }
                    (Access::ReadWrite, first)
                } else {
                    match Access::from_word(first) {
                        Some(access) => (access, after),
                        None => return fail(Problem::UnknownAccess(first.into())),
                    }
                };
                let rule = match Rule::compile(filter, pattern) {
                    Ok(rule) => rule,
                    Err(error) => {
                        return fail(Problem::InvalidFilter {
                            filter: filter.into(),
                            error,
                        });
                    }
                };
                if pattern && !rule.names_placeholder() {
                    parsed.warnings.push(format!(
                        "line {number}: pattern {filter:?} names no %u, %c or %t: it applies \
                         to every client"
                    ));
                }
                let section = match tenant {
                    None => &mut parsed.global,
                    Some(name) => parsed.tenants.entry(name.into()).or_default(),
                };
                let set = match (pattern, user) {
                    (true, _) => &mut section.patterns,
                    (false, None) => &mut section.anonymous,
                    (false, Some(name)) => section.users.entry(name.into()).or_default(),
                };
                set.push(rule, access);
            }
            "user" => {
                if rest.is_empty() {
                    return fail(Problem::MissingUsername);
                }
                user = Some(rest);
            }
            "tenant" => {
                if rest.is_empty() {
                    return fail(Problem::MissingTenant);
                }
                tenant = Some(rest);
                user = None;
            }
            _ => return fail(Problem::UnknownKeyword(keyword.into())),
        }
    }
    Ok(parsed)
}
