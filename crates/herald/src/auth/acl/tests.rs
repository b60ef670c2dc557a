#![allow(clippy::unwrap_used)]

use mqtt_codec::TopicError;

use super::*;

fn anon(client_id: &str) -> Who<'_> {
    Who {
        username: None,
        client_id,
        tenant: "",
    }
}

fn user<'a>(username: &'a str, client_id: &'a str) -> Who<'a> {
    Who {
        username: Some(username),
        client_id,
        tenant: "",
    }
}

fn in_tenant<'a>(tenant: &'a str, username: Option<&'a str>, client_id: &'a str) -> Who<'a> {
    Who {
        username,
        client_id,
        tenant,
    }
}

fn line_error(text: &str) -> (usize, Problem) {
    match Acl::parse(text) {
        Err(AclError::Line {
            line,
            problem,
            path: None,
        }) => (line, problem),
        other => panic!("{text:?}: {other:?}"),
    }
}

/// mosquitto's own `aclfile.example`, as it ships.
const MOSQUITTO_EXAMPLE: &str = "\
# This affects access control for clients with no username.
topic read $SYS/#

# This only affects clients with username \"roger\".
user roger
topic foo/bar

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
";

#[test]
fn mosquittos_example_file() {
    let acl = Acl::parse(MOSQUITTO_EXAMPLE).unwrap();
    assert_eq!(acl.len(), 3);
    assert!(acl.warnings().is_empty(), "{:?}", acl.warnings());
    let (nobody, roger) = (anon("c1"), user("roger", "c2"));
    assert!(acl.may_read(nobody, "$SYS/broker/uptime"));
    assert!(acl.may_subscribe(nobody, "$SYS/#"));
    assert!(!acl.may_publish(nobody, "$SYS/broker/uptime"));
    assert!(!acl.may_read(nobody, "foo/bar"));
    assert!(!acl.may_subscribe(nobody, "#"));
    // roger has his block only: not the anonymous rules.
    assert!(acl.may_publish(roger, "foo/bar"));
    assert!(acl.may_read(roger, "foo/bar"));
    assert!(acl.may_subscribe(roger, "foo/bar"));
    assert!(!acl.may_subscribe(roger, "foo/+"));
    assert!(!acl.may_read(roger, "$SYS/broker/uptime"));
    // The pattern, for everyone, with the client's own id only.
    for (who, id) in [(nobody, "c1"), (roger, "c2")] {
        assert!(acl.may_publish(who, &format!("$SYS/broker/connection/{id}/state")));
        assert!(!acl.may_publish(who, "$SYS/broker/connection/other/state"));
    }
    assert!(!acl.may_read(roger, "$SYS/broker/connection/c2/state"));
    // A user without a block gets the patterns only.
    let bob = user("bob", "c3");
    assert!(acl.may_publish(bob, "$SYS/broker/connection/c3/state"));
    assert!(!acl.may_read(bob, "$SYS/broker/uptime"));
}

#[test]
fn syntax_as_mosquitto_reads_it() {
    let text = "topic a/b\n\
                \x20 topic   read   with space/x y \r\n\
                # a comment\n\
                \t# an indented comment\n\
                \n\
                topic write w/#\n\
                topic readwrite rw\n\
                user  alice smith \n\
                topic read a/s\n";
    let acl = Acl::parse(text).unwrap();
    assert_eq!(acl.len(), 5);
    let nobody = anon("c");
    assert!(acl.may_publish(nobody, "a/b") && acl.may_read(nobody, "a/b"));
    assert!(acl.may_read(nobody, "with space/x y"));
    assert!(!acl.may_publish(nobody, "with space/x y"));
    assert!(acl.may_publish(nobody, "w/x") && !acl.may_read(nobody, "w/x"));
    assert!(acl.may_publish(nobody, "rw") && acl.may_read(nobody, "rw"));
    let alice = user("alice smith", "c");
    assert!(acl.may_read(alice, "a/s"));
    assert!(!acl.may_read(alice, "a/b"));
    assert!(!acl.may_read(user("alice", "c"), "a/s"));
}

#[test]
fn an_access_word_alone_is_the_topic() {
    let acl = Acl::parse("topic read\npattern deny\n").unwrap();
    assert!(acl.may_publish(anon("c"), "read"));
    assert!(acl.may_read(anon("c"), "read"));
    assert!(acl.may_publish(anon("c"), "deny"));
    assert_eq!(acl.warnings().len(), 3, "{:?}", acl.warnings());
    assert!(
        acl.warnings()[0].starts_with("line 1: "),
        "{:?}",
        acl.warnings()
    );
}

#[test]
fn errors_name_the_line_and_the_problem() {
    assert_eq!(
        line_error("topic a\n\nusr bob\n"),
        (3, Problem::UnknownKeyword("usr".into()))
    );
    assert_eq!(line_error("topic\n"), (1, Problem::MissingTopic("topic")));
    assert_eq!(
        line_error("# x\npattern   \n"),
        (2, Problem::MissingTopic("pattern"))
    );
    assert_eq!(line_error("user\n"), (1, Problem::MissingUsername));
    assert_eq!(line_error("user \t\n"), (1, Problem::MissingUsername));
    assert_eq!(line_error("tenant\n"), (1, Problem::MissingTenant));
    assert_eq!(
        line_error("topic rw a/b\n"),
        (1, Problem::UnknownAccess("rw".into()))
    );
    assert_eq!(
        line_error("topic a b\n"),
        (1, Problem::UnknownAccess("a".into()))
    );
    for (filter, error) in [
        ("a/#/b", TopicError::MultiLevelWildcardMisplaced),
        ("a+", TopicError::SingleLevelWildcardMisplaced),
        ("a/b#", TopicError::MultiLevelWildcardMisplaced),
    ] {
        assert_eq!(
            line_error(&format!("topic x\ntopic read {filter}\n")),
            (
                2,
                Problem::InvalidFilter {
                    filter: filter.into(),
                    error
                }
            )
        );
    }
    let message = Acl::parse("topic a\ntopic read a+\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "line 2: invalid topic filter \"a+\": '+' must be a whole level of a topic filter"
    );
    match Acl::from_bytes(b"topic a\ntopic b\xff\n") {
        Err(AclError::Line {
            line: 2,
            problem: Problem::NotUtf8,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl");
    std::fs::write(&path, "topic a\nbogus\n").unwrap();
    let message = Acl::load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: line 2: unknown keyword \"bogus\" (expected topic, pattern, user or tenant)",
            path.display()
        )
    );
    std::fs::write(&path, MOSQUITTO_EXAMPLE).unwrap();
    assert_eq!(Acl::load(&path).unwrap().len(), 3);
    let missing = dir.path().join("missing");
    assert!(matches!(Acl::load(&missing), Err(AclError::Io { .. })));
}

#[test]
fn an_empty_file_allows_nothing() {
    let acl = Acl::parse("# nothing\n\n").unwrap();
    assert!(acl.is_empty());
    assert!(!acl.may_publish(anon("c"), "a"));
    assert!(!acl.may_read(user("u", "c"), "a"));
    assert!(!acl.may_subscribe(anon("c"), "a"));
}

#[test]
fn deny_overrides_every_grant() {
    let text = "topic readwrite a/#\n\
                topic deny a/secret\n\
                pattern deny a/%c/private\n\
                user bob\n\
                topic readwrite #\n\
                topic deny b/+/x\n\
                pattern readwrite u/%u/#\n\
                pattern deny u/%u/locked\n";
    let acl = Acl::parse(text).unwrap();
    let nobody = anon("c1");
    assert!(acl.may_publish(nobody, "a/open"));
    assert!(!acl.may_publish(nobody, "a/secret"));
    assert!(!acl.may_read(nobody, "a/secret"));
    assert!(acl.may_read(nobody, "a/c2/private"));
    assert!(!acl.may_read(nobody, "a/c1/private"));
    // Subscriptions: refused whole when any topic they match is denied.
    assert!(!acl.may_subscribe(nobody, "a/#"));
    assert!(!acl.may_subscribe(nobody, "a/+"));
    assert!(acl.may_subscribe(nobody, "a/+/x"));
    assert!(!acl.may_subscribe(nobody, "a/+/private"));
    assert!(acl.may_subscribe(nobody, "a/c2/private"));
    assert!(acl.may_subscribe(nobody, "a/open/#"));
    // A pattern's deny beats a user block's grant (mosquitto would grant: it stops at the
    // user block's first match).
    let bob = user("bob", "c2");
    assert!(acl.may_publish(bob, "z"));
    assert!(!acl.may_publish(bob, "b/q/x"));
    assert!(!acl.may_publish(bob, "a/c2/private"));
    assert!(!acl.may_publish(bob, "u/bob/locked"));
    assert!(acl.may_publish(bob, "u/bob/open"));
    assert!(!acl.may_subscribe(bob, "#"));
    assert!(acl.may_subscribe(bob, "c/#"));
    assert!(!acl.may_subscribe(bob, "u/bob/#"));
    assert!(acl.may_subscribe(bob, "u/bob/+/x"));
}

#[test]
fn repeated_user_blocks_are_merged() {
    let acl = Acl::parse("user a\ntopic x\nuser b\ntopic y\nuser a\ntopic z\n").unwrap();
    assert!(acl.may_read(user("a", "c"), "x") && acl.may_read(user("a", "c"), "z"));
    assert!(!acl.may_read(user("a", "c"), "y"));
    assert!(acl.may_read(user("b", "c"), "y") && !acl.may_read(user("b", "c"), "z"));
}

#[test]
fn placeholders() {
    let text = "pattern readwrite users/%u/#\n\
                pattern read devices/dev-%c/in\n\
                pattern write tenants/%t/%u\n\
                topic read lit/%u\n";
    let acl = Acl::parse(text).unwrap();
    let alice = Who {
        username: Some("alice"),
        client_id: "42",
        tenant: "acme",
    };
    assert!(acl.may_publish(alice, "users/alice/x/y"));
    assert!(acl.may_publish(alice, "users/alice"));
    assert!(!acl.may_publish(alice, "users/bob/x"));
    assert!(acl.may_read(alice, "devices/dev-42/in"));
    assert!(!acl.may_read(alice, "devices/42/in"));
    assert!(acl.may_publish(alice, "tenants/acme/alice"));
    assert!(acl.may_subscribe(alice, "users/alice/+/z"));
    assert!(!acl.may_subscribe(alice, "users/+/z"));
    // `topic` lines take `%` as text, as mosquitto does.
    assert!(!acl.may_read(alice, "lit/alice"));
    // An anonymous client matches no `%u` pattern, the default tenant no `%t` pattern.
    let nobody = anon("42");
    assert!(acl.may_read(nobody, "devices/dev-42/in"));
    assert!(acl.may_read(nobody, "lit/%u"));
    assert!(!acl.may_publish(nobody, "users//x"));
    assert!(!acl.may_publish(nobody, "users/%u/x"));
    let no_tenant = user("alice", "42");
    assert!(!acl.may_publish(no_tenant, "tenants//alice"));
    assert!(!acl.may_publish(no_tenant, "tenants/%t/alice"));
}

#[test]
fn a_value_with_a_slash_spans_levels() {
    let acl = Acl::parse("pattern readwrite users/%u/#\n").unwrap();
    let who = user("acme/alice", "c");
    assert!(acl.may_publish(who, "users/acme/alice/x"));
    assert!(!acl.may_publish(who, "users/acme/x"));
    assert!(acl.may_subscribe(who, "users/acme/alice/#"));
    assert!(!acl.may_subscribe(who, "users/acme/#"));
    assert!(!acl.may_subscribe(who, "users/+/alice/#"));
}

#[test]
fn a_value_with_a_wildcard_grants_nothing_and_is_denied_everything() {
    let text =
        "pattern readwrite users/%u/#\ntopic readwrite open/#\nuser a+b\ntopic readwrite open/#\n";
    let acl = Acl::parse(text).unwrap();
    let plus = user("a+b", "c");
    assert!(!acl.may_publish(plus, "users/a+b/x"));
    assert!(acl.may_publish(plus, "open/x"));
    let hash = user("#", "c");
    assert!(!acl.may_read(hash, "users/x"));
    assert!(!acl.may_subscribe(hash, "users/#"));
    let acl = Acl::parse("topic readwrite open/#\npattern deny private/%c\n").unwrap();
    assert!(acl.may_publish(anon("plain"), "open/x"));
    assert!(!acl.may_publish(anon("bad#"), "open/x"));
    assert!(!acl.may_subscribe(anon("bad+"), "open/x"));
}

#[test]
fn tenant_blocks() {
    let text = "topic read everyone/#\n\
                pattern readwrite home/%u/#\n\
                tenant acme\n\
                topic read acme-anonymous\n\
                pattern read %t/%u\n\
                user alice\n\
                topic write acme-alice\n\
                tenant globex\n\
                user alice\n\
                topic write globex-alice\n\
                tenant acme\n\
                topic read acme-anonymous-2\n";
    let acl = Acl::parse(text).unwrap();
    assert_eq!(acl.len(), 7);
    let acme_alice = in_tenant("acme", Some("alice"), "c");
    let globex_alice = in_tenant("globex", Some("alice"), "c");
    let plain_alice = user("alice", "c");
    let acme_nobody = in_tenant("acme", None, "c");
    // Rules outside tenant blocks apply in every tenant.
    for who in [acme_nobody, in_tenant("other", None, "c"), anon("c")] {
        assert!(acl.may_read(who, "everyone/x"));
    }
    for who in [acme_alice, globex_alice, plain_alice] {
        assert!(acl.may_publish(who, "home/alice/x"));
    }
    assert!(acl.may_publish(acme_alice, "acme-alice"));
    assert!(!acl.may_publish(acme_alice, "globex-alice"));
    assert!(acl.may_publish(globex_alice, "globex-alice"));
    assert!(!acl.may_publish(globex_alice, "acme-alice"));
    assert!(!acl.may_publish(plain_alice, "acme-alice"));
    assert!(acl.may_read(acme_alice, "acme/alice"));
    assert!(!acl.may_read(globex_alice, "globex/alice"));
    // A tenant line starts with anonymous rules; repeated blocks are merged.
    assert!(acl.may_read(acme_nobody, "acme-anonymous"));
    assert!(acl.may_read(acme_nobody, "acme-anonymous-2"));
    assert!(!acl.may_read(acme_alice, "acme-anonymous"));
    assert!(!acl.may_read(anon("c"), "acme-anonymous"));
    assert!(!acl.may_read(in_tenant("globex", None, "c"), "acme-anonymous"));
}

#[test]
fn dollar_topics_need_rules_that_name_them() {
    let acl =
        Acl::parse("topic readwrite #\ntopic read +/stats\ntopic read $SYS/broker/#\n").unwrap();
    let who = anon("c");
    assert!(acl.may_publish(who, "a/b"));
    assert!(!acl.may_read(who, "$SYS/stats"));
    assert!(!acl.may_publish(who, "$SYS/x"));
    assert!(acl.may_read(who, "$SYS/broker/load"));
    assert!(acl.may_subscribe(who, "#"));
    assert!(acl.may_subscribe(who, "+/+"));
    assert!(acl.may_subscribe(who, "$SYS/broker/+"));
    assert!(!acl.may_subscribe(who, "$SYS/#"));
    assert!(!acl.may_subscribe(who, "$SYS/+"));
    let acl = Acl::parse("topic read #\ntopic deny $SYS/#\n").unwrap();
    // The deny does not meet `#`, which matches no `$` topic.
    assert!(acl.may_subscribe(who, "#"));
}

#[test]
fn invalid_subscription_filters_are_refused() {
    let acl = Acl::parse("topic readwrite #\n").unwrap();
    for filter in ["", "a/#/b", "a+", "a\0"] {
        assert!(!acl.may_subscribe(anon("c"), filter), "{filter:?}");
    }
}

#[test]
fn rules_from_a_claim() {
    let claim: AclClaim = serde_json::from_str(
        r#"{"pub": ["out/%c/#"], "sub": ["in/%u/+", "broadcast/#"], "deny": ["broadcast/%t/private"]}"#,
    )
    .unwrap();
    let rules = Rules::from_claim(&claim).unwrap();
    let who = Who {
        username: Some("alice"),
        client_id: "dev",
        tenant: "acme",
    };
    assert!(rules.may_publish(who, "out/dev/x"));
    assert!(!rules.may_read(who, "out/dev/x"));
    assert!(!rules.may_publish(who, "out/other/x"));
    assert!(rules.may_read(who, "in/alice/x"));
    assert!(!rules.may_publish(who, "in/alice/x"));
    assert!(rules.may_subscribe(who, "in/alice/+"));
    assert!(!rules.may_subscribe(who, "in/+/+"));
    assert!(!rules.may_subscribe(who, "out/dev/#"));
    assert!(rules.may_read(who, "broadcast/acme/public"));
    assert!(!rules.may_read(who, "broadcast/acme/private"));
    assert!(!rules.may_subscribe(who, "broadcast/#"));
    assert!(rules.may_subscribe(who, "broadcast/acme/public"));
    assert!(rules.may_subscribe(who, "broadcast/globex/#"));

    let empty = Rules::from_claim(&AclClaim::default()).unwrap();
    assert!(!empty.may_publish(who, "a") && !empty.may_read(who, "a"));

    let bad = AclClaim {
        subscribe: vec!["ok".into(), "a/#/b".into()],
        ..AclClaim::default()
    };
    assert_eq!(
        Rules::from_claim(&bad).unwrap_err().to_string(),
        "ACL claim sub[1]: invalid topic filter \"a/#/b\": '#' must be the whole last level of a topic filter"
    );
}

#[test]
fn shareable_between_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Acl>();
    send_sync::<Rules>();
    send_sync::<AclError>();
}
