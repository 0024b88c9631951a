//! The catalogue's contract: names, schemas portable to every major
//! function-calling API, honest annotations, and argument errors that name
//! the field. The golden file is rewritten with `UPDATE_GOLDEN=1`.

use memberspot_tools::{ALLOWED_SCHEMA_KEYWORDS, Catalogue, MemberKey, OfferScope, ToolClass};
use serde_json::{Value, json};

const NAMES: [&str; 17] = [
    "create_login_token",
    "delete_users",
    "delete_users_post",
    "enable_chapter_access",
    "find_user_by_email",
    "get_user_course_progress",
    "grant_offer_bulk",
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

/// With `--offers`, a tool is allowed only when its call is provably limited to those
/// offers. Each tool says how; a wrong or missing rule here is a way around the limit.
#[test]
fn every_tool_declares_how_it_stays_within_a_personas_offers() {
    use OfferScope::*;
    let expected = [
        (
            "create_login_token",
            MemberHoldsOffer {
                argument: "uid",
                by: MemberKey::Uid,
            },
        ),
        ("delete_users", Never),
        ("delete_users_post", Never),
        (
            "enable_chapter_access",
            CourseOfOffers {
                argument: "course_id",
            },
        ),
        ("find_user_by_email", NotApplicable),
        ("get_user_course_progress", NotApplicable),
        (
            "grant_offer_bulk",
            NamesOffer {
                argument: "offer_id",
            },
        ),
        (
            "grant_user_offer_by_email",
            NamesOffer {
                argument: "offer_id",
            },
        ),
        ("list_custom_user_properties", NotApplicable),
        ("list_exam_results", NotApplicable),
        ("list_offers", NotApplicable),
        ("list_user_course_progress", NotApplicable),
        ("list_users", NotApplicable),
        (
            "set_custom_user_properties",
            MemberHoldsOffer {
                argument: "email",
                by: MemberKey::Email,
            },
        ),
        (
            "set_offer_expiration",
            NamesOffer {
                argument: "offer_id",
            },
        ),
        ("set_order_state", Never),
        (
            "set_user_offer_state",
            NamesOffer {
                argument: "offer_id",
            },
        ),
    ];
    let c = Catalogue::standard();
    let declared: Vec<(&str, OfferScope)> =
        c.descriptors().map(|d| (d.name, d.offer_scope)).collect();
    assert_eq!(declared, expected);
    for d in c.descriptors() {
        // Only a tool that changes nothing may be left out of an offer restriction.
        assert_eq!(
            d.offer_scope == NotApplicable,
            d.annotations.read_only,
            "{}: a tool that changes the school needs an offer rule, a read-only one none",
            d.name
        );
        let argument = match d.offer_scope {
            NamesOffer { argument }
            | CourseOfOffers { argument }
            | MemberHoldsOffer { argument, .. } => argument,
            NotApplicable | Never => continue,
        };
        // The rule reads an argument every call must carry, of the type the tool reads.
        let schema = &d.input_schema["properties"][argument];
        assert_eq!(schema["type"], "string", "{}.{argument}", d.name);
        let required = d.input_schema["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == argument));
        assert!(required, "{}.{argument} must be required", d.name);
        let wants_email = matches!(
            d.offer_scope,
            MemberHoldsOffer {
                by: MemberKey::Email,
                ..
            }
        );
        // (`format` is reduced away; an e-mail argument is the one capped at 254.)
        assert_eq!(
            schema["maxLength"] == 254,
            wants_email,
            "{}.{argument}",
            d.name
        );
    }
}

/// Output fields that look like credentials, with their dotted paths.
fn secret_looking_fields(schema: &Value, path: &str, found: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, s) in props {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let lower = name.to_lowercase();
            if [
                "token",
                "secret",
                "password",
                "api_key",
                "apikey",
                "credential",
                // A login link carries its token.
                "login_url",
                "loginurl",
                "login_link",
                "loginlink",
            ]
            .iter()
            .any(|w| lower.contains(w))
            {
                found.push(p.clone());
            }
            secret_looking_fields(s, &p, found);
        }
    }
    if let Some(items) = schema.get("items") {
        secret_looking_fields(items, path, found);
    }
}

#[test]
fn secret_output_fields_are_declared_and_redacted_for_records() {
    let c = Catalogue::standard();
    for d in c.descriptors() {
        let mut looks_secret = Vec::new();
        secret_looking_fields(&d.output_schema, "", &mut looks_secret);
        let mut declared: Vec<String> = d
            .secret_output_fields
            .iter()
            .map(|s| s.to_string())
            .collect();
        looks_secret.sort();
        declared.sort();
        assert_eq!(
            looks_secret, declared,
            "{}: declare every secret output field in SECRET_OUTPUT_FIELDS (and only those)",
            d.name
        );
    }
    let entry = c.get("create_login_token").expect("tool");
    assert_eq!(
        entry.descriptor.secret_output_fields,
        ["token", "login_url"]
    );
    let token = "q7Vd0yJrX2mNcL5tB8wKp1ZsH4gE6fAu9RiOeT3";
    let url = format!("https://school.example/auth/login?token={token}");
    let result = json!({"token": token, "login_url": url, "expires_in_seconds": 3600});
    let recorded = entry.redact_for_record(&result);
    assert!(!recorded.to_string().contains(token), "{recorded}");
    assert!(
        recorded["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("q7Vd… (redacted, sha256:")),
        "{recorded}"
    );
    assert!(
        recorded["login_url"]
            .as_str()
            .is_some_and(|u| u.contains("(redacted, sha256:")),
        "the login link is fingerprinted too: {recorded}"
    );
    assert_eq!(recorded["expires_in_seconds"], 3600);
    assert_eq!(entry.secrets_in(&result), [token.to_string(), url]);
    let other = c.get("list_offers").expect("tool");
    let offers = json!({"offers": [{"id": "o1", "name": "Token Kurs"}]});
    assert_eq!(
        other.redact_for_record(&offers),
        offers,
        "nothing declared, nothing changed"
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
