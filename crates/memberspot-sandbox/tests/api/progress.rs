//! `/v1/users/course-progress/...`.

use serde_json::{Value, json};

use crate::common::{encode, keys, start, str_of};

#[tokio::test]
async fn progress_list_is_paginated_by_course() {
    let api = start().await;
    // Someone holding offers that grant at least two courses.
    let offers = api.get("/v1/offers").await.body;
    let courses_of = |offer: &Value| -> usize {
        offers
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == *offer)
            .map_or(0, |o| o["courseIds"].as_array().unwrap().len())
    };
    let users = api
        .users_where(|u| {
            u["offers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| courses_of(&h["offerId"]))
                .sum::<usize>()
                >= 2
        })
        .await;
    let email = str_of(&users[0]["email"]);

    let r = api
        .get(&format!(
            "/v1/users/course-progress/list/{}",
            encode(&email)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["nextPage", "progress"]);
    assert_eq!(r.body["nextPage"], Value::Null);
    let all = r.body["progress"].as_array().unwrap().clone();
    assert!(all.len() >= 2);
    for item in &all {
        assert_eq!(keys(item), ["activePosts", "completedPosts", "courseId"]);
        assert!(
            item["activePosts"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
    }

    let mut seen = Vec::new();
    let mut path = format!(
        "/v1/users/course-progress/list/{}?pageLength=1",
        encode(&email)
    );
    loop {
        let page = api.get(&path).await.body;
        assert_eq!(page["progress"].as_array().unwrap().len(), 1);
        seen.push(page["progress"][0].clone());
        match page["nextPage"].as_str() {
            Some(next) => {
                path = format!(
                    "/v1/users/course-progress/list/{}?pageLength=1&lastLoadedId={next}",
                    encode(&email)
                )
            }
            None => break,
        }
    }
    assert_eq!(seen, all);

    let r = api
        .get("/v1/users/course-progress/list/ghost%40example.com")
        .await;
    assert_eq!(r.body["message"], "User not found");
    let r = api
        .get(&format!(
            "/v1/users/course-progress/list/{}?pageLength=0",
            encode(&email)
        ))
        .await;
    assert_eq!(
        r.body["message"],
        json!(["pageLength must not be less than 1"])
    );
}

#[tokio::test]
async fn single_course_progress_has_a_user_block() {
    let api = start().await;
    let users = api
        .users_where(|u| u["progress"].as_object().is_some_and(|p| !p.is_empty()))
        .await;
    let user = &users[0];
    let email = str_of(&user["email"]);
    let (course, expected) = user["progress"].as_object().unwrap().iter().next().unwrap();
    let r = api
        .get(&format!(
            "/v1/users/course-progress/{course}/{}",
            encode(&email)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        keys(&r.body),
        ["activePosts", "completedPosts", "courseId", "user"]
    );
    assert_eq!(r.body["courseId"], course.as_str());
    assert_eq!(r.body["activePosts"], expected["activePosts"]);
    assert_eq!(r.body["completedPosts"], expected["completedPosts"]);
    assert_eq!(keys(&r.body["user"]), ["email", "firstname", "name", "uid"]);
    assert_eq!(r.body["user"]["uid"], user["uid"]);

    let r = api
        .get(&format!(
            "/v1/users/course-progress/noSuchCourse/{}",
            encode(&email)
        ))
        .await;
    assert_eq!(
        r.body,
        json!({"statusCode": 404, "message": "Course not found", "error": "Not Found"})
    );
    let r = api
        .get(&format!(
            "/v1/users/course-progress/{course}/ghost%40example.com"
        ))
        .await;
    assert_eq!(r.body["message"], "User not found");

    // A member without any holding is not enrolled anywhere.
    let nothing = api
        .users_where(|u| u["offers"] == json!([]) && u["progress"] == json!({}))
        .await;
    let r = api
        .get(&format!(
            "/v1/users/course-progress/{course}/{}",
            encode(&str_of(&nothing[0]["email"]))
        ))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn simulated_activity_shows_up() {
    let api = start().await;
    let state = api.state().await;
    let course = &state["courses"][0];
    let post = str_of(&course["chapters"][0]["posts"][0]["id"]);
    let course_id = str_of(&course["id"]);
    let offer = state["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["courseIds"].as_array().unwrap().contains(&course["id"]))
        .unwrap();
    api.post(
        "/v1/users/grant-user-offer-by-mail",
        json!({"email": "lern@example.com", "grantOffer": offer["id"]}),
    )
    .await;

    let r = api.post("/_sandbox/progress", json!({"email": "lern@example.com", "courseId": course_id, "postId": post, "completed": false})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api
        .get(&format!(
            "/v1/users/course-progress/{course_id}/lern%40example.com"
        ))
        .await;
    assert_eq!(
        (
            r.body["activePosts"].clone(),
            r.body["completedPosts"].clone()
        ),
        (json!([post]), json!([]))
    );
    api.post("/_sandbox/progress", json!({"email": "lern@example.com", "courseId": course_id, "postId": post, "completed": true})).await;
    let r = api
        .get(&format!(
            "/v1/users/course-progress/{course_id}/lern%40example.com"
        ))
        .await;
    assert_eq!(
        (
            r.body["activePosts"].clone(),
            r.body["completedPosts"].clone()
        ),
        (json!([]), json!([post]))
    );
}
