//! The front door (spec/security.md), black-box: for every route, no credentials → 401, the
//! wrong scope or namespace → 403, the right one → it works; JWTs from a test issuer whose
//! keys are served over HTTP, sent by the Python CloudEvents SDK through an EventPolicy;
//! redrives only to known destinations, JSON-only mutations, the audit log; a token rotated
//! without a restart. The listener (an open address, HTTPS) and egress are
//! `security_tls.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::auth::{UrlFor, call, event, guarded};
use common::sink::{Answer, Sink};
use common::{Switchyard, client};

const WAIT: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/auth")
        .join(name)
}

/// Two brokers in two namespaces, a trigger on `shop/orders` whose subscriber fails (so
/// events become dead letters at once), and identities with different scopes.
fn shop_and_bank(sink: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: orders, namespace: shop}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: ledger, namespace: bank}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: fulfil, namespace: shop}}
spec:
  broker: orders
  subscriber: {{uri: '{sink}'}}
  delivery: {{retry: 0}}
---
apiVersion: switchyard.dev/v1
kind: Identity
metadata: {{name: ops, namespace: shop}}
spec:
  token: {{value: ops-token}}
  scopes: [events:read, deadletters:read, deadletters:read-data, deadletters:redrive, deadletters:purge, resources:read, triggers:operate]
---
apiVersion: switchyard.dev/v1
kind: Identity
metadata: {{name: lister, namespace: shop}}
spec:
  token: {{value: lister-token}}
  scopes: [deadletters:read]
---
apiVersion: switchyard.dev/v1
kind: Identity
metadata: {{name: teller, namespace: bank}}
spec:
  token: {{value: teller-token}}
  scopes: [admin]
---
apiVersion: switchyard.dev/v1
kind: Identity
metadata: {{name: root}}
spec:
  token: {{fromEnv: ROOT_TOKEN}}
  scopes: ['admin@*']
---
apiVersion: switchyard.dev/v1
kind: Identity
metadata: {{name: checkout, namespace: shop}}
spec:
  token: {{value: checkout-token}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_wants_a_token_with_the_scope_in_its_namespace() {
    let sink = Sink::start(|_, _| Answer::status(500)).await;
    let sy = Switchyard::start_with_env(&shop_and_bank(&sink.url), &[("ROOT_TOKEN", "root-token")]);
    let ingress = sy.url("/shop/orders");

    // Sending: a subject of the broker's namespace may (allow-same-namespace), one of another
    // may not, an anonymous one must authenticate, a bad token is named as such.
    let send = |id: &'static str| {
        let url = ingress.clone();
        move || event(id, "com.shop.order").url_for(&url)
    };
    assert_eq!(call(send("a"), None).await.status(), 401);
    let p = common::problem(call(send("b"), Some("teller-token")).await).await;
    assert_eq!(p["status"], 403);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("allow-same-namespace"),
        "{p}"
    );
    let bad = call(send("c"), Some("no-such-token")).await;
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    assert_eq!(
        call(send("placed"), Some("checkout-token")).await.status(),
        202
    );

    let api = sy.url("/api/v1/namespaces/shop/brokers/orders/deadletters");
    let id = common::eventually("a dead letter", WAIT, || {
        let api = api.clone();
        async move {
            let v: serde_json::Value = call(|| client().get(&api), Some("ops-token"))
                .await
                .json()
                .await
                .unwrap();
            v["items"][0]["id"].as_str().map(str::to_owned)
        }
    })
    .await;

    let get = |url: String| move || client().get(&url);
    // The console's page and assets are open (they hold no data); what it shows comes from
    // the API, with the token the operator gives it.
    for page in ["/ui", "/ui/triggers/fulfil", "/ui/assets/app.js"] {
        let r = client().get(sy.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{page}");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'")
        );
    }
    guarded(
        "list dead letters",
        get(api.clone()),
        "deadletters:read",
        "teller-token",
        "lister-token",
    )
    .await;
    guarded(
        "show a dead letter with its event",
        get(format!("{api}/{id}")),
        "deadletters:read-data",
        "lister-token",
        "ops-token",
    )
    .await;
    guarded(
        "tail a broker",
        get(sy.url("/api/v1/namespaces/shop/brokers/orders/events?limit=1")),
        "events:read",
        "lister-token",
        "ops-token",
    )
    .await;
    guarded(
        "list event types",
        get(sy.url("/api/v1/namespaces/shop/eventtypes")),
        "events:read",
        "lister-token",
        "ops-token",
    )
    .await;
    for path in [
        "triggers",
        "triggers/fulfil",
        "brokers",
        "brokers/orders",
        "sources",
    ] {
        guarded(
            &format!("read {path} with their status"),
            get(sy.url(&format!("/api/v1/namespaces/shop/{path}"))),
            "resources:read",
            "lister-token",
            "ops-token",
        )
        .await;
    }
    guarded(
        "list replay jobs",
        get(sy.url("/api/v1/namespaces/shop/replays")),
        "resources:read",
        "lister-token",
        "ops-token",
    )
    .await;
    let replays = sy.url("/api/v1/namespaces/shop/triggers/fulfil/replays");
    guarded(
        "preview a replay",
        move || {
            client()
                .post(&replays)
                .json(&serde_json::json!({"fromOffset": 0, "dryRun": true}))
        },
        "triggers:operate",
        "lister-token",
        "ops-token",
    )
    .await;
    for action in ["pause", "resume"] {
        let url = sy.url(&format!("/api/v1/namespaces/shop/triggers/fulfil/{action}"));
        guarded(
            &format!("{action} a trigger"),
            move || {
                client()
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}")
            },
            "triggers:operate",
            "lister-token",
            "ops-token",
        )
        .await;
    }
    guarded(
        "scrape metrics",
        get(sy.url("/metrics")),
        "metrics:read",
        "ops-token",
        "root-token",
    )
    .await;
    guarded(
        "read the audit log",
        get(sy.url("/api/v1/namespaces/bank/audit")),
        "admin",
        "ops-token",
        "teller-token",
    )
    .await;
    let purge_none = api.clone() + "?type=nothing.matches";
    guarded(
        "purge dead letters",
        || client().delete(&purge_none),
        "deadletters:purge",
        "lister-token",
        "ops-token",
    )
    .await;
    let reload = sy.url("/api/v1/reload");
    guarded(
        "reload the configuration",
        || client().post(&reload).json(&serde_json::json!({})),
        "admin",
        "teller-token",
        "root-token",
    )
    .await;
    let redrive = format!("{api}/redrive");
    let ids = serde_json::json!({ "ids": [id] });
    guarded(
        "redrive",
        || client().post(&redrive).json(&ids),
        "deadletters:redrive",
        "lister-token",
        "ops-token",
    )
    .await;

    // The audit log names who redrove.
    let audit: serde_json::Value = call(
        get(sy.url("/api/v1/namespaces/shop/audit")),
        Some("root-token"),
    )
    .await
    .json()
    .await
    .unwrap();
    let entries = audit["items"].as_array().unwrap();
    let entry = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
    };
    assert_eq!(entry("redrive")["who"], "system:serviceaccount:shop:ops");
    // Pausing and resuming a trigger are audited too.
    assert_eq!(entry("pause")["who"], "system:serviceaccount:shop:ops");
    assert_eq!(entry("resume")["selection"]["trigger"], "fulfil");

    // The teller is admin of bank only: shop's dead letters are not theirs to read.
    let p = common::problem(call(get(api.clone()), Some("teller-token")).await).await;
    assert!(
        p["detail"].as_str().unwrap().contains("namespace `shop`"),
        "{p}"
    );
    // Probes stay open.
    assert_eq!(
        client()
            .get(sy.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A test OIDC issuer: signs tokens with the fixture keys; its JWK Set is served over HTTP.
struct Issuer {
    jwks_url: String,
    _server: tokio::task::JoinHandle<()>,
}

const ISSUER: &str = "https://issuer.test";

impl Issuer {
    async fn start() -> Issuer {
        let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { ([("content-type", "application/json")], jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Issuer {
            jwks_url: format!("http://{addr}/jwks"),
            _server: server,
        }
    }

    /// A token for `sub`, valid for an hour from `from_now_secs`, with `extra` claims.
    fn token(alg: &str, sub: &str, from_now_secs: i64, extra: serde_json::Value) -> String {
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let mut claims = serde_json::json!({
            "iss": ISSUER,
            "aud": "switchyard",
            "sub": sub,
            "iat": now + from_now_secs,
            "exp": now + from_now_secs + 3600,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let (algorithm, key, kid) = match alg {
            "EdDSA" => (
                jsonwebtoken::Algorithm::EdDSA,
                jsonwebtoken::EncodingKey::from_ed_pem(
                    &std::fs::read(fixture("issuer-ed25519.pem")).unwrap(),
                )
                .unwrap(),
                "test-ed25519",
            ),
            _ => (
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::EncodingKey::from_ec_pem(
                    &std::fs::read(fixture("issuer-es256.pem")).unwrap(),
                )
                .unwrap(),
                "test-es256",
            ),
        };
        let mut header = jsonwebtoken::Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_with_a_jwt_sends_through_an_event_policy() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let issuer = Issuer::start().await;
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: orders, namespace: shop}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: ledger, namespace: bank}}
---
apiVersion: switchyard.dev/v1
kind: TokenIssuer
metadata: {{name: test}}
spec:
  issuer: {ISSUER}
  audiences: [switchyard]
  jwks: {{url: '{}'}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {{name: checkout-only, namespace: shop}}
spec:
  to:
    - ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders}}
  from:
    - sub: 'system:serviceaccount:shop:checkout*'
  filters:
    - prefix: {{type: com.shop.}}
"#,
        issuer.jwks_url
    );
    let mut sy = Switchyard::start(&config);
    let ingress = sy.url("/shop/orders");
    let python = |token: &str, ty: &str| {
        let out = std::process::Command::new(common::python())
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/interop/send_with_token.py"),
            )
            .args([&ingress, token, ty])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the SDK script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let checkout = Issuer::token(
        "EdDSA",
        "system:serviceaccount:shop:checkout",
        0,
        serde_json::json!({}),
    );
    assert_eq!(python(&checkout, "com.shop.order.placed"), "202");
    // The policy's filter holds for every event of an allowed sender.
    assert_eq!(python(&checkout, "com.other.thing"), "403");
    // Another subject of the same namespace is not in `from`.
    let intruder = Issuer::token(
        "EdDSA",
        "system:serviceaccount:shop:intruder",
        0,
        serde_json::json!({}),
    );
    assert_eq!(python(&intruder, "com.shop.order.placed"), "403");
    // Expired, not yet valid, for another audience, from another issuer: not accepted.
    let expired = Issuer::token(
        "EdDSA",
        "system:serviceaccount:shop:checkout",
        -7200,
        serde_json::json!({}),
    );
    assert_eq!(python(&expired, "com.shop.order.placed"), "401");
    let early = Issuer::token(
        "EdDSA",
        "system:serviceaccount:shop:checkout",
        0,
        serde_json::json!({ "nbf": 4_000_000_000u64 }),
    );
    assert_eq!(python(&early, "com.shop.order.placed"), "401");
    let other_audience = Issuer::token(
        "ES256",
        "system:serviceaccount:shop:checkout",
        0,
        serde_json::json!({ "aud": "someone-else" }),
    );
    assert_eq!(python(&other_audience, "com.shop.order.placed"), "401");
    let other_issuer = Issuer::token(
        "EdDSA",
        "system:serviceaccount:shop:checkout",
        0,
        serde_json::json!({ "iss": "https://elsewhere.test" }),
    );
    assert_eq!(python(&other_issuer, "com.shop.order.placed"), "401");
    // A genuine token whose claims were changed (the subject) keeps a signature that no
    // longer fits: refused, even after the genuine one was accepted (and cached).
    let intruder_claims = intruder.split('.').nth(1).unwrap();
    let mut parts: Vec<&str> = checkout.split('.').collect();
    parts[1] = intruder_claims;
    let forged = parts.join(".");
    assert_eq!(python(&forged, "com.shop.order.placed"), "401");
    // The broker is the same however its path is spelled: the policy holds for
    // percent-encoded names, and for anonymous callers.
    for path in ["/shop/%6Frders", "/sh%6Fp/orders"] {
        let url = sy.url(path);
        let send = || event("encoded", "com.shop.order.placed").url_for(&url);
        assert_eq!(call(send, Some(&intruder)).await.status(), 403, "{path}");
        assert_eq!(call(send, None).await.status(), 401, "{path}");
    }
    // ES256 works as well as EdDSA.
    let es = Issuer::token(
        "ES256",
        "system:serviceaccount:shop:checkout-2",
        0,
        serde_json::json!({}),
    );
    assert_eq!(python(&es, "com.shop.order.shipped"), "202");

    // Scopes come from the `scope` claim: a token for bank reads bank's dead letters, not shop's.
    let auditor = Issuer::token(
        "EdDSA",
        "system:serviceaccount:bank:auditor",
        0,
        serde_json::json!({ "scope": "openid deadletters:read" }),
    );
    let shop = sy.url("/api/v1/namespaces/shop/brokers/orders/deadletters");
    let bank = sy.url("/api/v1/namespaces/bank/brokers/ledger/deadletters");
    assert_eq!(
        call(|| client().get(&shop), Some(&auditor)).await.status(),
        403
    );
    assert_eq!(
        call(|| client().get(&bank), Some(&auditor)).await.status(),
        200
    );

    let stored: Vec<String> = sy
        .stored("shop/orders")
        .into_iter()
        .map(|(_, e)| e.ty)
        .collect();
    assert_eq!(stored, ["com.shop.order.placed", "com.shop.order.shipped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrives_go_only_where_triggers_deliver_mutations_are_json_and_both_are_audited() {
    let sink = Sink::start(|_, _| Answer::status(500)).await;
    let config = common::broker_and_trigger("t", "delivery: {retry: 0}", &sink.url);
    let sy = Switchyard::start_with(
        &config,
        &["--redrive-allow-uri", "http://allowed.test/hooks"],
    );
    let send = || {
        event("lost", "com.example.t")
            .url_for(&sy.url("/default/default"))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 202);
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let count = |api: String| async move {
        let v = common::get_json(&api).await;
        v["items"].as_array().unwrap().len()
    };
    common::eventually("a dead letter", WAIT, || {
        let api = api.clone();
        async move { (count(api).await == 1).then_some(()) }
    })
    .await;

    let redrive = format!("{api}/redrive");
    // A cross-site form or text/plain post cannot reach a mutating call.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut r = client().post(&redrive).body(r#"{"all": true}"#);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 415, "{content_type:?}");
        common::problem(resp).await;
    }
    // To an address neither the trigger delivers to nor under the allowed prefix: refused,
    // the dead letter stays.
    for (uri, status) in [
        ("http://169.254.169.254/latest/meta-data", 403),
        ("http://allowed.test/hooks-x", 403),
        ("http://allowed.test.evil/hooks", 403),
        ("http://allowed.test@169.254.169.254/hooks", 400),
    ] {
        let resp = client()
            .post(&redrive)
            .json(&serde_json::json!({ "all": true, "uri": uri }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{uri}");
        common::problem(resp).await;
    }
    assert_eq!(count(api.clone()).await, 1);
    // Without authentication, a server on loopback answers only requests for localhost: a
    // page that rebinds its own name to 127.0.0.1 is refused.
    let resp = client()
        .get(&api)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    common::problem(resp).await;
    // To the trigger's own subscriber: taken.
    let resp = client()
        .post(&redrive)
        .json(&serde_json::json!({ "all": true, "uri": sink.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // It fails again and comes back; purge it.
    common::eventually("the dead letter back", WAIT, || {
        let api = api.clone();
        async move { (count(api).await == 1).then_some(()) }
    })
    .await;
    let purged: serde_json::Value = client()
        .delete(format!("{api}?all=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(purged["purged"], 1);

    let audit = common::get_json(&sy.url("/api/v1/namespaces/default/audit")).await;
    let items = audit["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["redrive", "purge"], "{audit}");
    assert_eq!(items[0]["who"], "anonymous");
    assert_eq!(items[0]["count"], 1);
    assert_eq!(items[0]["uri"], sink.url.as_str());
    assert_eq!(items[0]["broker"], "default");
    assert_eq!(items[1]["selection"]["all"], true);
    assert!(items[1]["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_rotated_without_a_restart() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir(secrets.path().join("root")).unwrap();
    let token_file = secrets.path().join("root/token");
    std::fs::write(&token_file, "old-token\n").unwrap();
    let config = format!(
        "{}\n---\napiVersion: switchyard.dev/v1\nkind: Identity\nmetadata: {{name: root}}\nspec:\n  token: {{secretKeyRef: {{name: root, key: token}}}}\n  scopes: ['admin@*']\n",
        common::TWO_BROKERS
    );
    let sy = Switchyard::start_with_env(
        &config,
        &[("SWITCHYARD_SECRETS_DIR", secrets.path().to_str().unwrap())],
    );
    let metrics = sy.url("/metrics");
    assert_eq!(
        call(|| client().get(&metrics), Some("old-token"))
            .await
            .status(),
        200
    );
    std::fs::write(&token_file, "new-token\n").unwrap();
    let reload = sy.url("/api/v1/reload");
    let resp = call(
        || client().post(&reload).json(&serde_json::json!({})),
        Some("old-token"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        call(|| client().get(&metrics), Some("old-token"))
            .await
            .status(),
        401
    );
    assert_eq!(
        call(|| client().get(&metrics), Some("new-token"))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_delivers_to_a_broker_whose_policy_admits_no_outside_caller() {
    // The server's own delivery to a Broker (a Trigger's subscriber) is the configuration's,
    // like a source's events: the Broker's EventPolicy governs outside callers only.
    let sink = Sink::ok().await;
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: orders, namespace: shop}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: archive, namespace: shop}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {{name: sealed, namespace: shop}}
spec:
  to: [{{ref: {{kind: Broker, name: archive}}}}]
  from: [{{sub: nobody}}]
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: keep, namespace: shop}}
spec:
  broker: orders
  subscriber:
    ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: archive, namespace: shop}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: watch, namespace: shop}}
spec:
  broker: archive
  subscriber: {{uri: '{}'}}
---
apiVersion: switchyard.dev/v1
kind: Identity
metadata: {{name: checkout, namespace: shop}}
spec:
  token: {{value: checkout-token}}
"#,
        sink.url
    );
    let sy = Switchyard::start(&config);
    let orders = sy.url("/shop/orders");
    let archive = sy.url("/shop/archive");
    let to = |url: &str| {
        let url = url.to_owned();
        move || event("kept", "com.shop.order").url_for(&url)
    };
    assert_eq!(
        call(to(&orders), Some("checkout-token")).await.status(),
        202
    );
    assert_eq!(
        call(to(&archive), Some("checkout-token")).await.status(),
        403
    );
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "kept");
    // No credential of the server's leaks to a subscriber.
    assert!(got[0].headers.get("authorization").is_none());
}
