//! The alternate shapes, literally: every alternative another platform's published
//! types show, spoken at once by a sandbox started with `shapes: Alternate`.

use memberspot_sandbox::{SandboxConfig, Shapes};
use serde_json::json;

use crate::common::{Api, config, encode, keys, start, start_with, str_of};

async fn alternate() -> Api {
    start_with(SandboxConfig {
        shapes: Shapes::Alternate,
        ..config()
    })
    .await
}

/// A seeded member holding an offer under an order, with an offer they do not hold.
async fn member(api: &Api) -> (String, String, String, String) {
    let state = api.state().await;
    let user = state["users"]
        .as_array()
        .and_then(|us| {
            us.iter().find(|u| {
                u["offers"]
                    .as_array()
                    .is_some_and(|hs| hs.iter().any(|h| h["orderId"].is_string()))
            })
        })
        .expect("a member with an order")
        .clone();
    let holding = user["offers"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["orderId"].is_string()))
        .expect("holding")
        .clone();
    let other = state["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|o| str_of(&o["id"]))
        .find(|id| {
            !user["offers"]
                .as_array()
                .is_some_and(|hs| hs.iter().any(|h| h["offerId"] == id.as_str()))
        })
        .expect("an offer not held");
    (
        str_of(&user["email"]),
        str_of(&holding["offerId"]),
        str_of(&holding["orderId"]),
        other,
    )
}

#[tokio::test]
async fn members_offers_properties_and_pages() {
    let api = alternate().await;
    assert_eq!(api.state().await["shapes"], "alternate");
    let r = api.get("/v1/users/list?pageLength=5").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["data", "nextPage"]);
    let users = r.body["data"].as_array().expect("data");
    assert_eq!(users.len(), 5);
    for u in users {
        let k = keys(u);
        for key in [
            "active",
            "created",
            "customUserProperties",
            "progress",
            "uid",
        ] {
            assert!(k.contains(&key.to_string()), "{key} missing: {k:?}");
        }
        for gone in ["createdAt", "customProperties"] {
            assert!(!k.contains(&gone.to_string()), "{gone} still sent: {k:?}");
        }
        assert!(u["active"].is_boolean());
        assert!(u["customUserProperties"].is_object());
        for p in u["progress"].as_array().expect("progress list") {
            assert_eq!(keys(p), ["activePosts", "completedPosts", "courseId"]);
            assert!(
                p["activePosts"].is_u64() && p["completedPosts"].is_u64(),
                "{p}"
            );
        }
    }
    // The same member in find-by-mail.
    let email = str_of(&users[0]["email"]);
    assert_eq!(api.user(&email).await, users[0]);

    let r = api.get("/v1/offers").await;
    for o in r.body.as_array().expect("a bare array") {
        assert_eq!(
            keys(o),
            ["hasCourseIds", "id", "name", "priority", "updatedAt"]
        );
    }
    let r = api.get("/v1/custom-user-properties/list").await;
    let props = r.body.as_array().expect("a bare array");
    let school = str_of(&props[0]["schoolId"]);
    for p in props {
        assert_eq!(keys(p), ["id", "name", "schoolId", "type"]);
        assert_eq!(p["schoolId"], school.as_str(), "one school");
    }
}

#[tokio::test]
async fn embedded_progress_counts_posts() {
    let api = alternate().await;
    let state = api.state().await;
    let offer = &state["offers"][0];
    let course = str_of(&offer["courseIds"][0]);
    let posts: Vec<String> = state["courses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == course.as_str()))
        .map(|c| {
            c["chapters"][0]["posts"]
                .as_array()
                .expect("posts")
                .iter()
                .map(|p| str_of(&p["id"]))
                .collect()
        })
        .expect("course");
    let email = "counter@example.com";
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": email, "grantOffer": offer["id"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for (post, completed) in [(&posts[0], true), (&posts[1], true), (&posts[2], false)] {
        let r = api
            .post(
                "/_sandbox/progress",
                json!({"email": email, "courseId": course, "postId": post, "completed": completed}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let user = api.user(email).await;
    let p = user["progress"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["courseId"] == course.as_str()))
        .expect("the course")
        .clone();
    assert_eq!(
        p,
        json!({"courseId": course, "activePosts": 1, "completedPosts": 2})
    );
    assert_eq!(user["active"], true);
    // The progress endpoints still list ids.
    let r = api
        .get(&format!(
            "/v1/users/course-progress/{course}/{}",
            encode(email)
        ))
        .await;
    assert_eq!(r.body["completedPosts"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn writes_answer_state_text_and_login_links() {
    let api = alternate().await;
    let (email, offer, order, _) = member(&api).await;
    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": email, "offerId": offer, "active": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"active": false, "email": email, "offerId": offer})
    );
    let r = api
        .post(
            "/v1/users/set-order-state",
            json!({"email": email, "orderId": order, "active": true}),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"active": true, "email": email, "orderId": order})
    );
    let r = api
        .post(
            "/v1/users/set-order-state",
            json!({"email": email, "orderId": order}),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"email": email, "orderId": order}),
        "removed: no state"
    );

    let uid = str_of(&api.users_where(|_| true).await[0]["uid"]);
    let r = api.get(&format!("/v1/users/login-token/{uid}")).await;
    assert_eq!(keys(&r.body), ["loginUrl", "token"]);
    let token = str_of(&r.body["token"]);
    assert!(
        str_of(&r.body["loginUrl"]).ends_with(&format!("?token={token}")),
        "{}",
        r.body
    );

    for (method, path) in [
        (reqwest::Method::DELETE, "/v1/users/delete-users"),
        (reqwest::Method::POST, "/v1/users/delete-users"),
    ] {
        let r = api
            .send(
                method.clone(),
                path,
                Some(&json!({"emails": [email]}).to_string()),
                Some(crate::common::KEY),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{method}: {}", r.text);
        assert_eq!(r.text, "ok", "{method}: text, not JSON");
        assert!(
            r.headers["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with("text/")),
            "{:?}",
            r.headers
        );
    }
    assert!(
        api.users_where(|u| u["email"] == email.as_str())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn documented_is_the_default() {
    let api = start().await;
    assert_eq!(api.state().await["shapes"], "documented");
    assert_eq!(
        keys(&api.get("/v1/users/list?pageLength=1").await.body),
        ["nextPage", "users"]
    );
    assert_eq!("Alternate".parse::<Shapes>(), Ok(Shapes::Alternate));
    assert!(
        "strange"
            .parse::<Shapes>()
            .is_err_and(|e| e.contains("documented or alternate"))
    );
}
