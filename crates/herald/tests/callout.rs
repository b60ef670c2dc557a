//! The HTTP auth callout against a real HTTP server on 127.0.0.1:0 that counts the requests
//! it gets and answers as each test sets: grants, denials, caching by `Cache-Control`,
//! coalescing of concurrent look-ups, timeouts, failures and `fail_open`. Also the HTTP
//! client itself: its body cap and HTTPS through rustls.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use herald::auth::callout::Callout;
use herald::auth::http::{Client, HttpError};
use herald::auth::{
    AclClaim, ClientLimits, Credentials, Denial, DenyReason, Grant, Method, Verdict,
};
use herald::config::{CalloutConfig, ListenerKind};
use mqtt_codec::ReasonCode;
use serde_json::{Value, json};

/// What the server answers.
#[derive(Clone)]
struct Reply {
    status: u16,
    cache_control: Option<&'static str>,
    body: String,
    delay: Duration,
}

fn reply(body: Value) -> Reply {
    Reply {
        status: 200,
        cache_control: None,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn allow() -> Reply {
    reply(json!({"result": "allow"}))
}

/// A request as the server saw it: its JSON body, `Authorization` and `Content-Type`.
type Seen = (Value, Option<String>, Option<String>);

/// The server: how many requests it got, the last one (body and `Authorization`), and what
/// it answers next.
struct Service {
    url: String,
    requests: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<Seen>>>,
    reply: Arc<Mutex<Reply>>,
}

impl Service {
    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn answer(&self, r: Reply) {
        *self.reply.lock().unwrap() = r;
    }
}

async fn service(first: Reply) -> Service {
    let requests = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(None));
    let reply = Arc::new(Mutex::new(first));
    let (n, l, r) = (requests.clone(), last.clone(), reply.clone());
    let app = Router::new().route(
        "/auth",
        post(move |headers: HeaderMap, body: String| {
            let (n, l, r) = (n.clone(), l.clone(), r.clone());
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                let text = |name| {
                    headers
                        .get(name)
                        .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
                };
                *l.lock().unwrap() = Some((
                    serde_json::from_str(&body).unwrap_or(Value::Null),
                    text(header::AUTHORIZATION),
                    text(header::CONTENT_TYPE),
                ));
                let answer = r.lock().unwrap().clone();
                tokio::time::sleep(answer.delay).await;
                let mut out =
                    (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
                if let Some(cc) = answer.cache_control {
                    out.headers_mut()
                        .insert(header::CACHE_CONTROL, cc.parse().unwrap());
                }
                out
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Service {
        url: format!("http://{addr}/auth"),
        requests,
        last,
        reply,
    }
}

fn cfg(url: &str) -> CalloutConfig {
    CalloutConfig {
        url: url.into(),
        timeout_ms: 2000,
        cache_max_secs: 300,
        cache_default_secs: 60,
        ..CalloutConfig::default()
    }
}

fn creds<'a>(client_id: &'a str, username: &'a str, password: &'a [u8]) -> Credentials<'a> {
    Credentials {
        client_id,
        username: Some(username),
        password: Some(password),
        certificate: None,
        certificate_tenant: None,
        peer: SocketAddr::from(([192, 0, 2, 7], 50312)),
        listener: ListenerKind::Mqtt,
    }
}

async fn check(callout: &Callout, username: &str, password: &str) -> Verdict {
    callout
        .check(&creds("dev-1", username, password.as_bytes()))
        .await
}

fn unavailable() -> Verdict {
    Verdict::Deny(Denial::new(DenyReason::CalloutUnavailable))
}

#[tokio::test]
async fn an_allow_carries_the_grant_and_the_request_says_who_connects() {
    let svc = service(reply(json!({
        "result": "allow", "username": "alice@acme", "tenant": "acme",
        "acl": {"pub": ["acme/alice/#"], "sub": ["acme/#"], "deny": ["acme/admin/#"]},
        "limits": {"messages_per_sec": 50, "max_qos": 1},
    })))
    .await;
    let callout = Callout::new(&CalloutConfig {
        authorization: "Bearer s3rvice".into(),
        ..cfg(&svc.url)
    })
    .unwrap();
    let c = Credentials {
        certificate: Some("alice-laptop"),
        certificate_tenant: None,
        listener: ListenerKind::Wss,
        ..creds("dev-1", "alice", b"hunter2")
    };
    let v = callout.check(&c).await;
    assert_eq!(
        v,
        Verdict::Allow(Grant {
            username: Some("alice@acme".into()),
            tenant: Some("acme".into()),
            acl: Some(AclClaim {
                publish: vec!["acme/alice/#".into()],
                subscribe: vec!["acme/#".into()],
                deny: vec!["acme/admin/#".into()],
            }),
            limits: Some(ClientLimits {
                messages_per_sec: Some(50),
                max_qos: Some(1),
                ..ClientLimits::default()
            }),
        })
    );
    let (body, authorization, content_type) = svc.last.lock().unwrap().clone().unwrap();
    assert_eq!(
        body,
        json!({"client_id": "dev-1", "username": "alice", "password": "hunter2",
               "peer": "192.0.2.7:50312", "listener": "wss", "certificate": "alice-laptop"})
    );
    assert_eq!(authorization.as_deref(), Some("Bearer s3rvice"));
    assert_eq!(content_type.as_deref(), Some("application/json"));

    // A password that is not UTF-8 goes base64; absent fields are null.
    let raw = Credentials {
        username: None,
        ..creds("dev-2", "", b"\xff\x00pw")
    };
    assert!(matches!(callout.check(&raw).await, Verdict::Allow(_)));
    let (body, _, _) = svc.last.lock().unwrap().clone().unwrap();
    assert_eq!(
        body,
        json!({"client_id": "dev-2", "username": null, "password": null,
               "password_base64": "/wBwdw==", "peer": "192.0.2.7:50312",
               "listener": "mqtt", "certificate": null})
    );
    let stats = callout.stats();
    assert_eq!(stats.requests.load(Ordering::Relaxed), 2);
    assert_eq!(stats.allowed.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_deny_is_not_authorized_and_cached() {
    let svc = service(reply(json!({"result": "deny", "reason": "account locked"}))).await;
    let callout = Callout::new(&cfg(&svc.url)).unwrap();
    let v = check(&callout, "mallory", "guess").await;
    assert_eq!(v, Verdict::Deny(Denial::new(DenyReason::CalloutDenied)));
    assert_eq!(
        Denial::new(DenyReason::CalloutDenied).code,
        ReasonCode::NotAuthorized
    );
    assert_eq!(check(&callout, "mallory", "guess").await, v);
    assert_eq!(svc.count(), 1, "the deny is cached for cache_default_secs");
    assert_eq!(callout.stats().cache_hits.load(Ordering::Relaxed), 1);
    // Another password is another key.
    check(&callout, "mallory", "guess2").await;
    assert_eq!(svc.count(), 2);
}

#[tokio::test]
async fn max_age_is_honoured_and_capped() {
    let svc = service(Reply {
        cache_control: Some("private, max-age=1"),
        ..allow()
    })
    .await;
    let callout = Callout::new(&cfg(&svc.url)).unwrap();
    check(&callout, "alice", "pw").await;
    check(&callout, "alice", "pw").await;
    assert_eq!(svc.count(), 1, "within max-age: from the cache");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    check(&callout, "alice", "pw").await;
    assert_eq!(svc.count(), 2, "after max-age: asked again");

    // max-age above cache_max_secs: kept cache_max_secs only.
    let svc = service(Reply {
        cache_control: Some("max-age=3600"),
        ..allow()
    })
    .await;
    let callout = Callout::new(&CalloutConfig {
        cache_max_secs: 1,
        ..cfg(&svc.url)
    })
    .unwrap();
    check(&callout, "alice", "pw").await;
    check(&callout, "alice", "pw").await;
    assert_eq!(svc.count(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    check(&callout, "alice", "pw").await;
    assert_eq!(svc.count(), 2, "capped at cache_max_secs");
}

#[tokio::test]
async fn no_store_and_no_default_are_not_cached() {
    let svc = service(Reply {
        cache_control: Some("no-store"),
        ..allow()
    })
    .await;
    let callout = Callout::new(&cfg(&svc.url)).unwrap();
    for n in 1..=3 {
        assert!(matches!(
            check(&callout, "alice", "pw").await,
            Verdict::Allow(_)
        ));
        assert_eq!(svc.count(), n);
    }
    // No Cache-Control and cache_default_secs = 0: not cached either.
    svc.answer(allow());
    let callout = Callout::new(&CalloutConfig {
        cache_default_secs: 0,
        ..cfg(&svc.url)
    })
    .unwrap();
    check(&callout, "alice", "pw").await;
    check(&callout, "alice", "pw").await;
    assert_eq!(svc.count(), 5);
    // With cache_default_secs, the same answer is kept.
    let callout = Callout::new(&cfg(&svc.url)).unwrap();
    check(&callout, "alice", "pw").await;
    check(&callout, "alice", "pw").await;
    assert_eq!(svc.count(), 6);
}

#[tokio::test]
async fn ten_thousand_concurrent_checks_of_one_user_make_one_request() {
    let svc = service(Reply {
        delay: Duration::from_millis(200),
        ..reply(json!({"result": "allow", "tenant": "acme"}))
    })
    .await;
    let callout = Callout::new(&CalloutConfig {
        timeout_ms: 10_000,
        ..cfg(&svc.url)
    })
    .unwrap();
    let mut checks = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let callout = callout.clone();
        checks.spawn(async move {
            let id = format!("device-{i}");
            callout.check(&creds(&id, "alice", b"pw")).await
        });
    }
    let mut allowed = 0;
    while let Some(v) = checks.join_next().await {
        if let Verdict::Allow(g) = v.unwrap() {
            assert_eq!(g.tenant.as_deref(), Some("acme"));
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10_000);
    assert_eq!(svc.count(), 1);
    let stats = callout.stats();
    assert_eq!(stats.requests.load(Ordering::Relaxed), 1);
    let hits = stats.cache_hits.load(Ordering::Relaxed);
    let coalesced = stats.coalesced.load(Ordering::Relaxed);
    assert_eq!(
        hits + coalesced,
        9_999,
        "hits {hits}, coalesced {coalesced}"
    );
    assert!(coalesced > 0, "the look-ups overlapped the request");
}

#[tokio::test]
async fn cache_by_client_id_separates_devices() {
    let svc = service(allow()).await;
    let shared = Callout::new(&cfg(&svc.url)).unwrap();
    shared.check(&creds("a", "alice", b"pw")).await;
    shared.check(&creds("b", "alice", b"pw")).await;
    assert_eq!(svc.count(), 1);
    let apart = Callout::new(&CalloutConfig {
        cache_by_client_id: true,
        ..cfg(&svc.url)
    })
    .unwrap();
    apart.check(&creds("a", "alice", b"pw")).await;
    apart.check(&creds("b", "alice", b"pw")).await;
    apart.check(&creds("b", "alice", b"pw")).await;
    assert_eq!(svc.count(), 3);
    // The listener is part of the key.
    let tls = Credentials {
        listener: ListenerKind::Tls,
        ..creds("a", "alice", b"pw")
    };
    shared.check(&tls).await;
    assert_eq!(svc.count(), 4);
}

#[tokio::test]
async fn a_timeout_is_server_unavailable() {
    let svc = service(Reply {
        delay: Duration::from_millis(1500),
        ..allow()
    })
    .await;
    let callout = Callout::new(&CalloutConfig {
        timeout_ms: 150,
        ..cfg(&svc.url)
    })
    .unwrap();
    let started = Instant::now();
    let v = check(&callout, "alice", "pw").await;
    assert_eq!(v, unavailable());
    assert_eq!(
        Denial::new(DenyReason::CalloutUnavailable).code,
        ReasonCode::ServerUnavailable
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(callout.stats().errors_timeout.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn failures_are_unavailable_and_never_cached() {
    let svc = service(Reply {
        status: 500,
        ..allow()
    })
    .await;
    let callout = Callout::new(&cfg(&svc.url)).unwrap();
    assert_eq!(check(&callout, "alice", "pw").await, unavailable());
    assert_eq!(check(&callout, "alice", "pw").await, unavailable());
    assert_eq!(svc.count(), 2, "an error is not cached");
    assert_eq!(callout.stats().errors_status.load(Ordering::Relaxed), 2);
    // Once the service is back, its answer counts.
    svc.answer(allow());
    assert!(matches!(
        check(&callout, "alice", "pw").await,
        Verdict::Allow(_)
    ));
    assert_eq!(svc.count(), 3);

    for (n, malformed) in [
        "not json",
        r#"{"result": "maybe"}"#,
        r#"{"result": "Allow"}"#,
        r#"{"username": "alice"}"#,
        r#"{"result": "allow", "tenent": "acme"}"#,
        r#"{"result": "allow", "acl": {"pub": "a/#"}}"#,
        r#"{"result": "allow", "limits": {"max_qos": "one"}}"#,
        r#"["allow"]"#,
    ]
    .into_iter()
    .enumerate()
    {
        svc.answer(Reply {
            body: malformed.into(),
            ..allow()
        });
        let before = svc.count();
        assert_eq!(
            check(&callout, "bob", "pw").await,
            unavailable(),
            "{malformed}"
        );
        assert_eq!(svc.count(), before + 1);
        assert_eq!(
            callout.stats().errors_malformed.load(Ordering::Relaxed),
            n as u64 + 1
        );
    }
    // Another status than 200, even with a valid body.
    svc.answer(Reply {
        status: 201,
        ..allow()
    });
    assert_eq!(check(&callout, "bob", "pw").await, unavailable());

    // Nobody listening.
    let gone = Callout::new(&cfg("http://127.0.0.1:1/auth")).unwrap();
    assert_eq!(check(&gone, "alice", "pw").await, unavailable());
    assert_eq!(gone.stats().errors_connect.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn fail_open_passes_the_client_on() {
    let svc = service(Reply {
        status: 503,
        ..allow()
    })
    .await;
    let callout = Callout::new(&CalloutConfig {
        fail_open: true,
        timeout_ms: 150,
        ..cfg(&svc.url)
    })
    .unwrap();
    assert_eq!(check(&callout, "alice", "pw").await, Verdict::Pass);
    svc.answer(Reply {
        delay: Duration::from_millis(1000),
        ..allow()
    });
    assert_eq!(check(&callout, "alice", "pw").await, Verdict::Pass);
    // A real deny still denies.
    svc.answer(reply(json!({"result": "deny"})));
    assert_eq!(
        check(&callout, "alice", "pw").await,
        Verdict::Deny(Denial::new(DenyReason::CalloutDenied))
    );
}

#[test]
fn bad_settings_are_refused() {
    let e = Callout::new(&cfg("ftp://example.invalid/"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("auth.callout.url: "), "{e}");
    let e = Callout::new(&CalloutConfig {
        authorization: "Bearer \n x".into(),
        ..cfg("http://127.0.0.1:1/")
    })
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("auth.callout.authorization: "), "{e}");
}

#[tokio::test]
async fn the_client_caps_bodies_and_reads_cache_control() {
    let app = Router::new()
        .route("/big", get(|| async { vec![b'x'; 2 * 1024 * 1024] }))
        .route(
            "/cached",
            get(|| async { ([(header::CACHE_CONTROL, "public, max-age=42")], "{}") }),
        )
        .route(
            "/uncached",
            get(|| async { ([(header::CACHE_CONTROL, "max-age=42, no-cache")], "{}") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(2).unwrap();
    let t = Duration::from_secs(5);
    let e = client
        .get(&format!("http://{addr}/big"), t)
        .await
        .unwrap_err();
    assert_eq!(e, HttpError::TooLarge);
    let a = client
        .get(&format!("http://{addr}/cached"), t)
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.cache_max_age, &a.body[..]),
        (200, Some(42), &b"{}"[..])
    );
    let a = client
        .get(&format!("http://{addr}/uncached"), t)
        .await
        .unwrap();
    assert_eq!(a.cache_max_age, Some(0));
    let a = client
        .get(&format!("http://{addr}/missing"), t)
        .await
        .unwrap();
    assert_eq!((a.status, a.cache_max_age), (404, None));
    let e = client.get("mqtt://127.0.0.1/", t).await.unwrap_err();
    assert!(matches!(e, HttpError::Url(_)), "{e:?}");
}

/// The callout over HTTPS: a rustls server with a certificate made here, a client trusting
/// only its CA.
#[tokio::test]
async fn the_callout_speaks_https() {
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(
                                br#"{"result": "allow", "username": "tls-user"}"#,
                            )),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("https://localhost:{port}/auth");
    let callout = Callout::with_client(&cfg(&url), Client::with_tls(4, tls));
    let v = check(&callout, "alice", "pw").await;
    assert_eq!(allowed_name(&v), Some("tls-user"), "{v:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    // The system's roots do not know this CA: the handshake fails, the client is refused.
    let untrusting = Callout::new(&cfg(&url)).unwrap();
    assert_eq!(check(&untrusting, "alice", "pw").await, unavailable());
    assert_eq!(untrusting.stats().errors_connect.load(Ordering::Relaxed), 1);
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

fn allowed_name(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Allow(g) => g.username.as_deref(),
        _ => None,
    }
}
