//! Offers, custom properties, chapters and exams.

use serde_json::json;

use crate::common::{keys, start, str_of};

#[tokio::test]
async fn offers_are_a_bare_array() {
    let api = start().await;
    let r = api.get("/v1/offers").await;
    assert_eq!(r.status, 200);
    let offers = r.body.as_array().expect("a bare array");
    assert_eq!(offers.len(), 4);
    assert_eq!(offers[0]["name"], "Online-Kurs Basis");
    for o in offers {
        assert_eq!(
            keys(o),
            ["courseIds", "id", "name", "priority", "updatedAt"]
        );
        assert_eq!(o["id"].as_str().unwrap().len(), 20);
        let n = o["courseIds"].as_array().unwrap().len();
        assert!((1..=3).contains(&n));
    }
}

#[tokio::test]
async fn custom_properties_list_and_set() {
    let api = start().await;
    let r = api.get("/v1/custom-user-properties/list").await;
    assert_eq!(r.status, 200);
    let props = r.body.as_array().expect("a bare array").clone();
    assert_eq!(props.len(), 3);
    for p in &props {
        assert_eq!(keys(p), ["id", "name", "type"]);
    }
    let (firma, phone) = (str_of(&props[0]["id"]), str_of(&props[1]["id"]));
    let email = str_of(&api.get("/v1/users/list?pageLength=1").await.body["users"][0]["email"]);
    let before = api.user(&email).await["customProperties"].clone();

    let r = api
        .post(
            "/v1/users/set-custom-user-properties",
            json!({"email": email, "properties": [{"id": firma, "value": "ACME GmbH"}, {"propertyId": phone, "value": "+49 30 123"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["customProperties"][&firma], "ACME GmbH");
    assert_eq!(r.body["customProperties"][&phone], "+49 30 123");
    let newsletter = str_of(&props[2]["id"]);
    assert_eq!(
        r.body["customProperties"].get(&newsletter),
        before.get(&newsletter),
        "others untouched"
    );

    let r = api
        .post(
            "/v1/users/set-custom-user-properties",
            json!({"email": email, "properties": [{"id": "nope", "value": "x"}]}),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"statusCode": 404, "message": "Custom user property nope not found", "error": "Not Found"})
    );
    let r = api
        .post(
            "/v1/users/set-custom-user-properties",
            json!({"email": email, "properties": [{"id": firma, "value": 5}]}),
        )
        .await;
    assert_eq!(
        r.body["message"],
        json!(["properties.0.value must be a string"])
    );
    let r = api
        .post(
            "/v1/users/set-custom-user-properties",
            json!({"email": email}),
        )
        .await;
    assert_eq!(r.body["message"], json!(["properties must be an array"]));
}

#[tokio::test]
async fn chapter_access_is_recorded() {
    let api = start().await;
    let state = api.state().await;
    let course = &state["courses"][1];
    let (course_id, chapter_id) = (str_of(&course["id"]), str_of(&course["chapters"][2]["id"]));
    let email = str_of(&state["users"][0]["email"]);

    let r = api
        .post(
            "/v1/chapters/chapter-access/enable",
            json!({"email": email.to_uppercase(), "courseId": course_id, "chapterId": chapter_id}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"email": email, "courseId": course_id, "chapterId": chapter_id, "enabled": true})
    );
    let state = api.state().await;
    let user = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email.as_str())
        .unwrap();
    assert_eq!(
        user["unlockedChapters"],
        json!([{"courseId": course_id, "chapterId": chapter_id}])
    );

    let other_chapter = str_of(&state["courses"][0]["chapters"][0]["id"]);
    let r = api
        .post(
            "/v1/chapters/chapter-access/enable",
            json!({"email": email, "courseId": course_id, "chapterId": other_chapter}),
        )
        .await;
    assert_eq!(r.body["message"], "Chapter not found");
    let r = api
        .post(
            "/v1/chapters/chapter-access/enable",
            json!({"email": email, "courseId": "nope", "chapterId": chapter_id}),
        )
        .await;
    assert_eq!(r.body["message"], "Course not found");
    let r = api
        .post(
            "/v1/chapters/chapter-access/enable",
            json!({"email": email}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["message"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn exam_results() {
    let api = start().await;
    let state = api.state().await;
    let mut found = false;
    for exam in state["exams"].as_array().unwrap() {
        assert_eq!(keys(exam), ["courseId", "id", "name"]);
        let r = api
            .get(&format!("/v1/exams/{}/results", str_of(&exam["id"])))
            .await;
        assert_eq!(r.status, 200);
        for result in r.body.as_array().expect("a bare array") {
            found = true;
            assert_eq!(
                keys(result),
                ["email", "maxScore", "passed", "score", "submittedAt", "uid"]
            );
        }
    }
    assert!(found, "some exam has results");
    let r = api.get("/v1/exams/nope/results").await;
    assert_eq!(
        r.body,
        json!({"statusCode": 404, "message": "Exam not found", "error": "Not Found"})
    );
}
