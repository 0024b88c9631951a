//! The catalogue's contract: names, schemas portable to every major
//! function-calling API, honest annotations, and argument errors that name
//! the field. The golden file is rewritten with `UPDATE_GOLDEN=1`.

use memberspot_tools::{ALLOWED_SCHEMA_KEYWORDS, Catalogue, ToolClass};
use serde_json::{Value, json};

const NAMES: [&str; 16] = [
    "create_login_token",
    "delete_users",
    "delete_users_post",
    "enable_chapter_access",
    "find_user_by_email",
    "get_user_course_progress",
    "grant_user_offer_by_email",
    "list_custom_user_properties",
    "list_exam_results",
    "list_offers",
    "list_user_course_progress",
    "list_users",
    "set_custom_user_properties",
    "set_offer_expiration",
    "set_order_state",
    "set_user_offer_state",
];

#[test]
fn exactly_the_contracted_tools() {
    let c = Catalogue::standard();
    let names: Vec<&str> = c.iter().map(|e| e.name()).collect();
    assert_eq!(names, NAMES);
}

fn walk_keywords(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(o) = schema.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    for (k, v) in o {
        if !ALLOWED_SCHEMA_KEYWORDS.contains(&k.as_str()) {
            problems.push(format!("{path}: keyword `{k}`"));
        }
        if k == "type" && !v.is_string() {
            problems.push(format!("{path}: type must be a single string, got {v}"));
        }
    }
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        for (name, s) in props {
            if s.get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                problems.push(format!("{path}.{name}: no description"));
            }
            walk_keywords(s, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = o.get("items") {
        walk_keywords(items, &format!("{path}[]"), problems);
    }
}

#[test]
fn input_schemas_use_only_portable_keywords_and_describe_every_field() {
    let mut problems = Vec::new();
    for d in Catalogue::standard().descriptors() {
        assert_eq!(d.input_schema["type"], json!("object"), "{}", d.name);
        walk_keywords(&d.input_schema, d.name, &mut problems);
        assert_eq!(
            d.output_schema["type"],
            json!("object"),
            "{} output must be an object",
            d.name
        );
        assert!(
            d.description.len() > 120,
            "{} description is too thin for a model",
            d.name
        );
        assert!(
            !d.output_schema.to_string().contains("$ref"),
            "{} output schema has a $ref",
            d.name
        );
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn annotations_are_true_to_the_semantics() {
    let c = Catalogue::standard();
    let class = |n: &str| c.get(n).map(|e| e.descriptor.class);
    for read in [
        "find_user_by_email",
        "get_user_course_progress",
        "list_custom_user_properties",
        "list_exam_results",
        "list_offers",
        "list_user_course_progress",
        "list_users",
    ] {
        assert_eq!(class(read), Some(ToolClass::Read), "{read}");
    }
    // Deleting members, or removing a holding with its progress, cannot be undone.
    for destructive in [
        "delete_users",
        "delete_users_post",
        "set_user_offer_state",
        "set_order_state",
    ] {
        assert_eq!(
            class(destructive),
            Some(ToolClass::Destructive),
            "{destructive}"
        );
    }
    for write in [
        "grant_user_offer_by_email",
        "set_offer_expiration",
        "set_custom_user_properties",
        "enable_chapter_access",
        "create_login_token",
    ] {
        assert_eq!(class(write), Some(ToolClass::Write), "{write}");
    }
    let token = c
        .get("create_login_token")
        .map(|e| e.descriptor.annotations);
    assert_eq!(
        token.map(|a| a.idempotent),
        Some(false),
        "each call mints a new token"
    );
    assert!(
        c.iter()
            .filter(|e| e.name() != "create_login_token")
            .all(|e| e.descriptor.annotations.idempotent)
    );
}

#[test]
fn argument_errors_name_the_field() {
    let c = Catalogue::standard();
    let cases = [
        (
            "grant_user_offer_by_email",
            json!({"offer_id": "o"}),
            "email",
            "missing field",
        ),
        (
            "grant_user_offer_by_email",
            json!({"email": "nope", "offer_id": "o"}),
            "email",
            "not a valid e-mail",
        ),
        (
            "grant_user_offer_by_email",
            json!({"email": "a@b.de", "offer_id": "  "}),
            "offer_id",
            "must not be empty",
        ),
        (
            "grant_user_offer_by_email",
            json!({"email": "a@b.de", "offerId": "o"}),
            "offerId",
            "unknown field",
        ),
        (
            "list_users",
            json!({"page_length": 0}),
            "page_length",
            "between 1 and 100",
        ),
        (
            "list_users",
            json!({"active": "yes"}),
            "active",
            "invalid type",
        ),
        (
            "delete_users",
            json!({"emails": []}),
            "emails",
            "at least one",
        ),
        (
            "delete_users",
            json!({"emails": ["a@b.de", "bad"]}),
            "emails[1]",
            "not a valid e-mail",
        ),
        (
            "set_offer_expiration",
            json!({"email": "a@b.de", "offer_id": "o", "expires_at": "soon"}),
            "expires_at",
            "ISO-8601",
        ),
        (
            "set_user_offer_state",
            json!({"email": "a@b.de", "offer_id": "o", "state": "gone"}),
            "state",
            "unknown variant",
        ),
        (
            "set_custom_user_properties",
            json!({"email": "a@b.de", "properties": [{"id": "p", "value": "1"}, {"id": "p", "value": "2"}]}),
            "properties[1].id",
            "twice",
        ),
    ];
    for (tool, args, field, needle) in cases {
        let err = c
            .validate(tool, &args)
            .expect_err(&format!("{tool} {args} must fail"));
        assert_eq!(err.code(), "invalid_arguments");
        assert_eq!(err.field(), Some(field), "{tool} {args}: {err}");
        assert!(err.to_string().contains(needle), "{tool} {args}: {err}");
    }
    let err = c
        .validate("list_offers", &json!([1]))
        .expect_err("array args");
    assert!(err.to_string().contains("must be a JSON object"));
    let err = c.validate("no_such_tool", &json!({})).expect_err("unknown");
    assert_eq!(err.code(), "unknown_tool");
    assert!(
        c.validate("list_offers", &Value::Null).is_ok(),
        "no arguments may be sent as null"
    );
}

#[test]
fn golden_catalogue() {
    let c = Catalogue::standard();
    let actual =
        serde_json::to_string_pretty(&c.descriptors().collect::<Vec<_>>()).expect("encodes") + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/catalogue.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().expect("has parent"))
            .expect("mkdir");
        std::fs::write(path, &actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    // Compared as JSON values: key order depends on serde_json's `preserve_order`, which
    // another crate in the workspace may switch on.
    let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
    assert!(
        parse(&expected) == parse(&actual),
        "the tool catalogue changed; review and run `UPDATE_GOLDEN=1 cargo test -p memberspot-tools --test catalogue`"
    );
}
