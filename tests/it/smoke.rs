//! End to end in one breath: anonymous, allowed, 401, 403, with claims injected upstream.

use serde_json::json;

use crate::support::yaml::basic;
use crate::support::{metric, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_allowed_unauthorized_forbidden() {
    let rig = Rig::start(basic).await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);

    let r = gw.get("/public/x", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(upstream.requests(), 1);

    let r = gw.get("/api/orders", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="jwt-gateway""#
    );
    assert_eq!(
        upstream.requests(),
        1,
        "a denied request never reaches the upstream"
    );

    let token = rig.token();
    let r = gw
        .client()
        .get(gw.url("/api/orders"))
        .bearer_auth(&token)
        .header("X-Auth-Subject", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.last().unwrap();
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert_eq!(seen.headers.get_all("x-auth-subject").iter().count(), 1);
    assert_eq!(seen.headers["x-auth-roles"], "orders.read,user");
    assert!(
        seen.headers.get("authorization").is_none(),
        "token stripped by default"
    );

    let mut c = rig.claims();
    c["realm_access"] = json!({"roles": ["user"]});
    let r = gw.get("/api/orders", Some(&rig.mint(&c))).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer error="insufficient_scope""#
    );
    assert_eq!(upstream.requests(), 2);

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"gateway_auth_decisions_total{decision="allow",reason="ok",route="api"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"gateway_auth_decisions_total{decision="deny",reason="insufficient_scope",route="api"}"#
        ),
        Some(1.0)
    );
    rig.stop().await;
}
