//! `/v1/users/...`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{Api, encode, holding, keys, start, str_of};

async fn first_offer(api: &Api) -> String {
    str_of(&api.get("/v1/offers").await.body[0]["id"])
}

/// All uids via `lastLoadedId`/`nextPage`.
async fn walk(api: &Api, page_length: usize, filter: &str) -> Vec<String> {
    let mut uids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/users/list?pageLength={page_length}{filter}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&lastLoadedId={c}"));
        }
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let users = r.body["users"].as_array().unwrap();
        assert!(!users.is_empty() || cursor.is_none(), "no empty final page");
        uids.extend(users.iter().map(|u| str_of(&u["uid"])));
        match &r.body["nextPage"] {
            Value::Null => break,
            Value::String(next) => {
                assert_eq!(users.len(), page_length, "only full pages have a cursor");
                assert_eq!(Some(next), uids.last());
                cursor = Some(next.clone());
            }
            other => panic!("bad nextPage {other}"),
        }
    }
    uids
}

#[tokio::test]
async fn list_shape_and_defaults() {
    let api = start().await;
    let r = api.get("/v1/users/list").await;
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.body), ["nextPage", "users"]);
    let users = r.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 10, "default pageLength is 10");
    assert_eq!(r.body["nextPage"], users[9]["uid"]);
    for u in users {
        let k = keys(u);
        for key in ["uid", "email", "createdAt", "offers", "customProperties"] {
            assert!(k.contains(&key.to_string()), "{key} in {k:?}");
        }
        assert!(k.iter().all(|k| {
            [
                "uid",
                "email",
                "firstname",
                "name",
                "createdAt",
                "offers",
                "customProperties",
            ]
            .contains(&k.as_str())
        }));
        for h in u["offers"].as_array().unwrap() {
            assert!(h["offerId"].is_string() && h["active"].is_boolean());
        }
    }
}

#[tokio::test]
async fn pagination_covers_everyone_once_and_survives_a_delete() {
    let api = start().await;
    let all = walk(&api, 7, "").await;
    assert_eq!(all.len(), 50);
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 50);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "ordered by uid");
    assert_eq!(walk(&api, 100, "").await, all);
    assert_eq!(
        walk(&api, 50, "").await,
        all,
        "an exact multiple ends without an empty page"
    );

    // Delete the cursor user between two pages: the next page is unaffected.
    let page1 = api.get("/v1/users/list?pageLength=5").await.body;
    let cursor = str_of(&page1["nextPage"]);
    let email = str_of(&page1["users"][4]["email"]);
    let r = api
        .delete("/v1/users/delete-users", json!({"emails": [email]}))
        .await;
    assert_eq!(r.body["deletedCount"], 1);
    let page2 = api
        .get(&format!(
            "/v1/users/list?pageLength=5&lastLoadedId={cursor}"
        ))
        .await
        .body;
    let got: Vec<String> = page2["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| str_of(&u["uid"]))
        .collect();
    assert_eq!(got, all[5..10]);
}

#[tokio::test]
async fn page_length_validation() {
    let api = start().await;
    for (q, msg) in [
        ("abc", "pageLength must be an integer number"),
        ("1.5", "pageLength must be an integer number"),
        ("101", "pageLength must not be greater than 100"),
        ("0", "pageLength must not be less than 1"),
    ] {
        let r = api.get(&format!("/v1/users/list?pageLength={q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(
            r.body,
            json!({"statusCode": 400, "message": [msg], "error": "Bad Request"})
        );
    }
    let r = api.get("/v1/users/list?pageLength=100").await;
    assert_eq!(r.body["users"].as_array().unwrap().len(), 50);
    assert_eq!(r.body["nextPage"], Value::Null);
}

#[tokio::test]
async fn filters_and_booleans_as_strings() {
    let api = start().await;
    let offer = first_offer(&api).await;
    let holders = walk(&api, 100, &format!("&offerId={offer}")).await;
    let active = walk(&api, 100, &format!("&offerId={offer}&active=TRUE")).await;
    let inactive = walk(&api, 100, &format!("&offerId={offer}&active=false")).await;
    assert!(!holders.is_empty() && !inactive.is_empty());
    assert_eq!(active.len() + inactive.len(), holders.len());
    let state = api.state().await;
    for uid in &active {
        let user = state["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| &u["uid"] == uid)
            .unwrap();
        assert_eq!(holding(user, &offer).unwrap()["active"], true);
    }

    let r = api.get("/v1/users/list?active=yes").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"], json!(["active must be a boolean value"]));
    let r = api.get("/v1/users/list?offerId=doesNotExist").await;
    assert_eq!(r.body, json!({"users": [], "nextPage": null}));

    let offers = api.get("/v1/offers").await.body;
    let course = str_of(&offers[0]["courseIds"][0]);
    let by_course = walk(&api, 100, &format!("&courseId={course}")).await;
    assert!(by_course.len() >= holders.len());
    let everyone_inactive = walk(&api, 100, "&active=false").await;
    let everyone_active = walk(&api, 100, "&active=true").await;
    assert_eq!(everyone_active.len() + everyone_inactive.len(), 50);
}

#[tokio::test]
async fn find_by_mail_decodes_and_ignores_case() {
    let api = start().await;
    let plus = api
        .users_where(|u| u["email"].as_str().unwrap().contains('+'))
        .await;
    let email = str_of(&plus[0]["email"]);
    for path in [
        format!("/v1/users/find-by-mail/{}", encode(&email)),
        format!("/v1/users/find-by-mail/{}", email.replace('@', "%40")),
        format!(
            "/v1/users/find-by-mail/{}",
            email.to_uppercase().replace('+', "%2B")
        ),
        format!("/v1/users/find-by-mail/%20{}%20", encode(&email)),
    ] {
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.body["email"], email.as_str());
        assert_eq!(r.body["uid"], plus[0]["uid"]);
    }
    let r = api.get("/v1/users/find-by-mail/nobody%40example.com").await;
    assert_eq!(
        r.body,
        json!({"statusCode": 404, "message": "User not found", "error": "Not Found"})
    );
    let r = api.get("/v1/users/find-by-mail/not-an-email").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"], json!(["email must be an email"]));
}

#[tokio::test]
async fn grant_creates_then_reactivates() {
    let api = start().await;
    let offer = first_offer(&api).await;
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": " Neu.Kunde+test@Example.com ", "grantOffer": offer, "firstname": "Neu",
                   "name": "Kunde", "orderId": "DS24-999", "somethingElse": 1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["email"], "neu.kunde+test@example.com");
    assert_eq!(r.body["firstname"], "Neu");
    assert_eq!(r.body["name"], "Kunde");
    assert_eq!(r.body["uid"].as_str().unwrap().len(), 20);
    assert!(r.body["createdAt"].is_string());
    assert_eq!(
        r.body["offers"],
        json!([{"offerId": offer, "active": true, "orderId": "DS24-999"}])
    );
    let uid = r.body["uid"].clone();

    let found = api.user("neu.kunde+test@example.com").await;
    assert_eq!(found["uid"], uid);

    // Revoke, then grant again without an order id: active again, order kept.
    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": "neu.kunde+test@example.com", "offerId": offer, "active": false}),
        )
        .await;
    assert_eq!(holding(&r.body, &offer).unwrap()["active"], false);
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": "NEU.KUNDE+TEST@EXAMPLE.COM", "grantOffer": offer}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["uid"], uid);
    assert_eq!(
        r.body["offers"],
        json!([{"offerId": offer, "active": true, "orderId": "DS24-999"}])
    );
}

#[tokio::test]
async fn grant_errors() {
    let api = start().await;
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": "x@example.com", "grantOffer": "nope"}),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"statusCode": 404, "message": "Offer not found", "error": "Not Found"})
    );
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": "bad", "grantOffer": 7, "firstname": 1, "orderId": false}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["message"],
        json!([
            "email must be an email",
            "grantOffer must be a string",
            "firstname must be a string",
            "orderId must be a string"
        ])
    );
    let r = api
        .post(
            "/v1/users/grant-user-offer-by-mail",
            json!({"email": "a@b.de", "grantOffer": ""}),
        )
        .await;
    assert_eq!(r.body["message"], json!(["grantOffer should not be empty"]));
}

/// A seeded user with an active holding whose courses have progress.
async fn active_with_progress(api: &Api) -> (String, String, String) {
    let offers = api.get("/v1/offers").await.body;
    let users = api
        .users_where(|u| {
            u["offers"].as_array().unwrap().len() == 1 && u["offers"][0]["active"] == true
        })
        .await;
    for u in users {
        let offer = str_of(&u["offers"][0]["offerId"]);
        let courses = offers
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == offer.as_str())
            .unwrap()["courseIds"]
            .clone();
        if let Some(c) = courses
            .as_array()
            .unwrap()
            .iter()
            .find(|c| u["progress"].get(c.as_str().unwrap()).is_some())
        {
            return (str_of(&u["email"]), offer, str_of(c));
        }
    }
    panic!("no seeded user with progress");
}

#[tokio::test]
async fn revoke_keeps_progress_and_omitted_active_removes_it() {
    let api = start().await;
    let (email, offer, course) = active_with_progress(&api).await;
    let progress_path = format!("/v1/users/course-progress/{course}/{}", encode(&email));
    let before = api.get(&progress_path).await.body;

    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": email, "offerId": offer, "active": "false"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(holding(&r.body, &offer).unwrap()["active"], false);
    assert_eq!(
        api.get(&progress_path).await.body,
        before,
        "revoking keeps progress"
    );

    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": email, "offerId": offer, "active": true}),
        )
        .await;
    assert_eq!(holding(&r.body, &offer).unwrap()["active"], true);

    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": email, "offerId": offer, "active": null}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(holding(&r.body, &offer).is_none());
    let gone = api.get(&progress_path).await;
    assert_eq!(gone.status, 404, "progress deleted with the holding");

    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": email, "offerId": offer}),
        )
        .await;
    assert_eq!(r.body["message"], "User does not hold this offer");
    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": "ghost@example.com", "offerId": offer}),
        )
        .await;
    assert_eq!(r.body["message"], "User not found");
    let r = api
        .post(
            "/v1/users/set-offer-state",
            json!({"email": email, "offerId": offer, "active": "maybe"}),
        )
        .await;
    assert_eq!(r.body["message"], json!(["active must be a boolean value"]));
}

#[tokio::test]
async fn order_holdings_switch_together() {
    let api = start().await;
    let shared = api
        .users_where(|u| {
            let hs = u["offers"].as_array().unwrap();
            hs.len() == 2 && hs[0]["orderId"].is_string() && hs[0]["orderId"] == hs[1]["orderId"]
        })
        .await;
    let user = &shared[0];
    let (email, order) = (
        str_of(&user["email"]),
        str_of(&user["offers"][0]["orderId"]),
    );

    let r = api
        .post(
            "/v1/users/set-order-state",
            json!({"email": email, "orderId": order, "active": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        r.body["offers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["active"] == false)
    );
    let r = api
        .post(
            "/v1/users/set-order-state",
            json!({"email": email, "orderId": order, "active": true}),
        )
        .await;
    assert!(
        r.body["offers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["active"] == true)
    );
    let r = api
        .post(
            "/v1/users/set-order-state",
            json!({"email": email, "orderId": order}),
        )
        .await;
    assert_eq!(r.body["offers"], json!([]));
    let r = api
        .post(
            "/v1/users/set-order-state",
            json!({"email": email, "orderId": order}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = api
        .post("/v1/users/set-order-state", json!({"email": email}))
        .await;
    assert_eq!(
        r.body["message"],
        json!(["orderId should not be empty", "orderId must be a string"])
    );
}

#[tokio::test]
async fn expiry_via_clock_advance() {
    let api = start().await;
    let (email, offer, _) = active_with_progress(&api).await;
    let in_an_hour = (chrono_now(&api).await + 3600.0) as i64;
    let expires = chrono_iso(in_an_hour);
    let r = api
        .post(
            "/v1/users/set-offer-expires",
            json!({"email": email, "offerId": offer, "expiresAt": expires}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(holding(&r.body, &offer).unwrap()["active"], true);
    assert!(holding(&r.body, &offer).unwrap()["expiresAt"].is_string());

    let r = api
        .post("/_sandbox/clock", json!({"advanceSeconds": 7200}))
        .await;
    assert_eq!(r.status, 200);
    let user = api.user(&email).await;
    assert_eq!(
        holding(&user, &offer).unwrap()["active"],
        false,
        "expired holdings read as inactive"
    );
    let inactive = api
        .get(&format!(
            "/v1/users/list?pageLength=100&offerId={offer}&active=false"
        ))
        .await
        .body;
    assert!(
        inactive["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"] == email.as_str())
    );

    // Clearing the expiry restores access; a bad date is a 400.
    let r = api
        .post(
            "/v1/users/set-offer-expires",
            json!({"email": email, "offerId": offer}),
        )
        .await;
    assert_eq!(holding(&r.body, &offer).unwrap()["active"], true);
    assert!(holding(&r.body, &offer).unwrap().get("expiresAt").is_none());
    let r = api
        .post(
            "/v1/users/set-offer-expires",
            json!({"email": email, "offerId": offer, "expiresAt": "soon"}),
        )
        .await;
    assert_eq!(
        r.body["message"],
        json!(["expiresAt must be a valid ISO 8601 date string"])
    );
    let r = api
        .post(
            "/v1/users/set-offer-expires",
            json!({"email": email, "offerId": "nope", "expiresAt": null}),
        )
        .await;
    assert_eq!(r.status, 404);
}

async fn chrono_now(api: &Api) -> f64 {
    let now = str_of(&api.get("/_sandbox/clock").await.body["now"]);
    memberspot_wire::Timestamp::parse(&now)
        .unwrap()
        .0
        .timestamp() as f64
}

fn chrono_iso(secs: i64) -> String {
    let t = memberspot_wire::Timestamp::from_json(&json!(secs)).unwrap();
    t.to_rfc3339()
}

#[tokio::test]
async fn delete_users_both_methods() {
    let api = start().await;
    let users = api.get("/v1/users/list?pageLength=3").await.body;
    let a = str_of(&users["users"][0]["email"]);
    let b = str_of(&users["users"][1]["email"]);
    let r = api
        .delete(
            "/v1/users/delete-users",
            json!({"emails": [a.to_uppercase(), "nobody@example.com", 42, "nonsense", a]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"deleted": [a], "deletedCount": 1}));
    assert_eq!(
        api.get(&format!("/v1/users/find-by-mail/{}", encode(&a)))
            .await
            .status,
        404
    );

    let r = api
        .post("/v1/users/delete-users", json!({"emails": [b]}))
        .await;
    assert_eq!(
        (r.status, r.body.clone()),
        (201, json!({"deleted": [b], "deletedCount": 1}))
    );

    let r = api
        .delete("/v1/users/delete-users", json!({"emails": []}))
        .await;
    assert_eq!(
        r.body["message"],
        json!(["emails must contain at least 1 elements"])
    );
    let r = api
        .delete("/v1/users/delete-users", json!({"emails": "a@b.de"}))
        .await;
    assert_eq!(r.body["message"], json!(["emails must be an array"]));
    let r = api.delete("/v1/users/delete-users", json!({})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn login_token() {
    let api = start().await;
    let uid = str_of(&api.get("/v1/users/list?pageLength=1").await.body["users"][0]["uid"]);
    let r = api.get(&format!("/v1/users/login-token/{uid}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.body), ["token"]);
    let token = str_of(&r.body["token"]);
    assert_eq!(token.len(), 48);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(
        api.get(&format!("/v1/users/login-token/{uid}")).await.body["token"],
        token.as_str()
    );
    let r = api.get("/v1/users/login-token/unknownUid").await;
    assert_eq!(
        r.body,
        json!({"statusCode": 404, "message": "User not found", "error": "Not Found"})
    );
}
