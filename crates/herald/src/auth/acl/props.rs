//! Property tests: the checks against a brute-force reference over a small universe of
//! topics (levels `a`, `b`, `$x`, at most 4 deep), where the reference substitutes
//! placeholders as text (as mosquitto does) and matches with `mqtt_codec::topic::matches`.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use mqtt_codec::topic::matches;
use proptest::prelude::*;

use super::*;

/// The levels of the universe's topics.
const LEVELS: [&str; 3] = ["a", "b", "$x"];

/// Every topic of the universe.
fn universe() -> &'static [String] {
    static TOPICS: OnceLock<Vec<String>> = OnceLock::new();
    TOPICS.get_or_init(|| {
        let mut all: Vec<String> = LEVELS.iter().map(|l| l.to_string()).collect();
        let mut last = all.clone();
        for _ in 1..4 {
            last = last
                .iter()
                .flat_map(|t| LEVELS.iter().map(move |l| format!("{t}/{l}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    })
}

/// Every subscription filter over the universe's levels and `+`, with or without a final
/// `#`, at most 4 levels.
fn all_filters() -> &'static [String] {
    static FILTERS: OnceLock<Vec<String>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let choices = ["a", "b", "$x", "+"];
        let mut stems: Vec<Vec<&str>> = vec![vec![]];
        let mut all = Vec::new();
        for depth in 0..4 {
            all.extend(
                stems
                    .iter()
                    .map(|s| [s.as_slice(), &["#"]].concat().join("/")),
            );
            if depth > 0 {
                all.extend(stems.iter().map(|s| s.join("/")));
            }
            stems = stems
                .iter()
                .flat_map(|s| choices.iter().map(move |c| [s.as_slice(), &[*c]].concat()))
                .collect();
        }
        all.extend(stems.iter().map(|s| s.join("/")));
        all
    })
}

/// A filter whose levels are drawn from `levels`, maybe ending in `#`, 1 to 4 levels.
fn filter(levels: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(levels), 0..=4),
        any::<bool>(),
    )
        .prop_filter_map("a filter has a level", |(mut levels, hash)| {
            if hash {
                levels.truncate(3);
                levels.push("#");
            }
            (!levels.is_empty()).then(|| levels.join("/"))
        })
}

fn access() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["read", "write", "readwrite", "deny"][..])
}

/// A rule as the reference sees it.
#[derive(Debug, Clone)]
struct RefRule {
    keyword: &'static str,
    access: &'static str,
    filter: String,
}

impl RefRule {
    fn line(&self) -> String {
        format!("{} {} {}\n", self.keyword, self.access, self.filter)
    }

    /// The filter with the client's values put in as text; `None` if it names one the client
    /// lacks.
    fn substituted(&self, who: Who<'_>) -> Option<String> {
        if self.keyword == "topic" {
            return Some(self.filter.clone());
        }
        if self.filter.contains("%u") && who.username.is_none() {
            return None;
        }
        Some(
            self.filter
                .replace("%u", who.username.unwrap_or(""))
                .replace("%c", who.client_id),
        )
    }

    fn matches(&self, who: Who<'_>, topic: &str) -> bool {
        self.substituted(who).is_some_and(|f| matches(&f, topic))
    }
}

fn reference_allows(rules: &[RefRule], who: Who<'_>, topic: &str, want: &str) -> bool {
    let granted = rules
        .iter()
        .any(|r| (r.access == want || r.access == "readwrite") && r.matches(who, topic));
    granted
        && !rules
            .iter()
            .any(|r| r.access == "deny" && r.matches(who, topic))
}

fn reference_subscribe(rules: &[RefRule], who: Who<'_>, filter: &str) -> bool {
    universe()
        .iter()
        .filter(|t| matches(filter, t))
        .all(|t| reference_allows(rules, who, t, "read"))
}

fn acl_of(rules: &[RefRule]) -> Acl {
    Acl::parse(&rules.iter().map(RefRule::line).collect::<String>()).unwrap()
}

fn rules(
    keyword: &'static str,
    levels: &'static [&'static str],
    n: usize,
) -> impl Strategy<Value = Vec<RefRule>> {
    prop::collection::vec(
        (access(), filter(levels)).prop_map(move |(access, filter)| RefRule {
            keyword,
            access,
            filter,
        }),
        1..=n,
    )
}

const PLAIN: &[&str] = &["a", "b", "$x", "+"];
const TEMPLATED: &[&str] = &["a", "b", "$x", "+", "%u", "%c"];

/// The clients the placeholder properties ask for: anonymous, a username within one level,
/// and one spanning two (as a tenant prefix does).
const WHOS: [Who<'static>; 3] = [
    Who {
        username: None,
        client_id: "b",
        tenant: "",
    },
    Who {
        username: Some("a"),
        client_id: "b",
        tenant: "",
    },
    Who {
        username: Some("a/b"),
        client_id: "$x",
        tenant: "",
    },
];

const ANONYMOUS: Who<'static> = WHOS[0];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Topic checks agree with the reference on every topic of the universe.
    #[test]
    fn topic_checks_match_the_reference(rules in rules("topic", PLAIN, 5)) {
        let acl = acl_of(&rules);
        for topic in universe() {
            prop_assert_eq!(acl.may_publish(ANONYMOUS, topic),
                reference_allows(&rules, ANONYMOUS, topic, "write"), "publish {}", topic);
            prop_assert_eq!(acl.may_read(ANONYMOUS, topic),
                reference_allows(&rules, ANONYMOUS, topic, "read"), "read {}", topic);
        }
    }

    /// ... and so do patterns, substituted in place rather than as text.
    #[test]
    fn pattern_checks_match_the_reference(rules in rules("pattern", TEMPLATED, 4)) {
        let acl = acl_of(&rules);
        for who in WHOS {
            for topic in universe() {
                prop_assert_eq!(acl.may_publish(who, topic),
                    reference_allows(&rules, who, topic, "write"), "publish {} {:?}", topic, who);
                prop_assert_eq!(acl.may_read(who, topic),
                    reference_allows(&rules, who, topic, "read"), "read {} {:?}", topic, who);
            }
        }
    }

    /// A subscription is never allowed to a filter matching a topic the client may not
    /// read.
    #[test]
    fn subscribe_is_sound(rules in rules("pattern", TEMPLATED, 5)) {
        let acl = acl_of(&rules);
        for who in WHOS {
            for filter in all_filters() {
                if acl.may_subscribe(who, filter) {
                    prop_assert!(reference_subscribe(&rules, who, filter),
                        "{} allowed for {:?} but some topic it matches is not readable", filter, who);
                }
            }
        }
    }

    /// With one grant, a subscription is allowed exactly when every topic it matches is
    /// readable: coverage is exact.
    #[test]
    fn one_rule_coverage_is_exact(
        access in prop::sample::select(&["read", "readwrite"][..]),
        filter in filter(TEMPLATED),
    ) {
        let rules = [RefRule { keyword: "pattern", access, filter }];
        let acl = acl_of(&rules);
        for who in WHOS {
            for sub in all_filters() {
                prop_assert_eq!(acl.may_subscribe(who, sub), reference_subscribe(&rules, who, sub),
                    "{} for {:?}", sub, who);
            }
        }
    }

    /// With everything granted and one deny, a subscription is refused exactly when the
    /// deny matches one of its topics: intersection is exact.
    #[test]
    fn one_deny_intersection_is_exact(deny in filter(TEMPLATED)) {
        let rules = [
            RefRule { keyword: "pattern", access: "read", filter: "#".into() },
            RefRule { keyword: "pattern", access: "read", filter: "$x/#".into() },
            RefRule { keyword: "pattern", access: "deny", filter: deny },
        ];
        let acl = acl_of(&rules);
        for who in WHOS {
            // A deny that a value makes deeper than the universe meets filters on topics
            // the reference cannot see.
            if rules[2].substituted(who).is_some_and(|f| f.split('/').count() > 4) {
                continue;
            }
            for sub in all_filters() {
                prop_assert_eq!(acl.may_subscribe(who, sub), reference_subscribe(&rules, who, sub),
                    "{} for {:?}", sub, who);
            }
        }
    }
}

#[test]
fn the_universe_is_what_it_says() {
    assert_eq!(universe().len(), 3 + 9 + 27 + 81);
    let filters = all_filters();
    assert_eq!(filters.len(), (1 + 4 + 16 + 64) + (4 + 16 + 64 + 256));
    assert!(
        filters
            .iter()
            .all(|f| mqtt_codec::topic::validate_topic_filter(f).is_ok())
    );
    assert!(filters.contains(&"#".to_string()) && filters.contains(&"$x/+/#".to_string()));
}
