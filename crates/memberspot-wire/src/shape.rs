//! What an answer looks like, without what it says: the fields, JSON types and lengths
//! of an answer, and how they differ from what this version reads. Used by `memberspot
//! doctor` to check a real school's answers and to write a report a user can attach to
//! a bug report: no value of the school (no e-mail, name, id, token, date) ends up in it,
//! and object keys that look like data (ids, e-mails, names) are counted, never shown.
//!
//! The expectations below mirror the types in [`crate::model`] and
//! [`crate::responses`], aliases included; a field added there belongs here too (the
//! doctor's tests against the sandbox fail otherwise).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::Timestamp;
use crate::responses::{CURSOR, LIST_OF, PROGRESS_LIST, USERS_LIST};

/// The JSON type of a value, as named in reports.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether an object key is a field name (`createdAt`, `offer_id`) rather than data
/// (an id, an e-mail, a name). Generated ids mix cases and digits at random; field
/// names are words.
pub fn looks_like_field_name(key: &str) -> bool {
    let bytes = key.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if key.len() > 40 || !(first.is_ascii_lowercase() || *first == b'_') {
        return false;
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    // Digits only as a short suffix (`address2`), never inside a word.
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > 2 || bytes[..bytes.len() - digits].iter().any(u8::is_ascii_digit) {
        return false;
    }
    // camelCase: an upper-case letter starts a word, so two never follow each other.
    !bytes
        .windows(2)
        .any(|w| w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase())
}

/// What a field of an answer should hold.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Anything (the answer's content is not read).
    Any,
    String,
    Bool,
    Number,
    /// An id: a string, or a number.
    Id,
    /// ISO-8601 text, epoch seconds or milliseconds, or `{_seconds, _nanoseconds}`.
    Timestamp,
    /// A list of post ids (or objects with an id), or how many posts.
    Posts,
    /// An object with these fields; other keys are unknown.
    Object(&'static [Field]),
    /// A list whose items are each as given.
    ListOf(&'static Expect),
    /// An object keyed by data (ids) whose values are each as given.
    Map(&'static Expect),
    /// One of two forms (a bare list or a page object).
    Either(&'static Expect, &'static Expect),
}

impl Expect {
    fn name(&self) -> String {
        match self {
            Expect::Any => "anything".into(),
            Expect::String => "string".into(),
            Expect::Bool => "boolean".into(),
            Expect::Number => "number".into(),
            Expect::Id => "string or number".into(),
            Expect::Timestamp => "date (ISO-8601 text, epoch number or {_seconds})".into(),
            Expect::Posts => "list of post ids, or a count".into(),
            Expect::Object(_) => "object".into(),
            Expect::ListOf(_) => "array".into(),
            Expect::Map(_) => "object keyed by id".into(),
            Expect::Either(a, b) => format!("{} or {}", a.name(), b.name()),
        }
    }

    /// Whether `v`'s JSON type is one this expectation reads (its content aside).
    fn fits(&self, v: &Value) -> bool {
        match (self, v) {
            (Expect::Any, _) => true,
            (Expect::String, Value::String(_)) => true,
            (Expect::Bool, Value::Bool(_)) => true,
            (Expect::Number, Value::Number(_)) => true,
            (Expect::Id, Value::String(_) | Value::Number(_)) => true,
            (Expect::Timestamp, v) => Timestamp::from_json(v).is_some(),
            (Expect::Posts, Value::Array(_)) => true,
            (Expect::Posts, Value::Number(n)) => n.as_u64().is_some(),
            (Expect::Object(_) | Expect::Map(_), Value::Object(_)) => true,
            (Expect::ListOf(_), Value::Array(_)) => true,
            (Expect::Either(a, b), v) => a.fits(v) || b.fits(v),
            _ => false,
        }
    }
}

/// One field of an object: its canonical name, the other names it is read under, and
/// what it holds.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub expect: Expect,
    /// Without it the object does not decode.
    pub required: bool,
}

const fn field(name: &'static str, expect: Expect) -> Field {
    Field {
        name,
        aliases: &[],
        expect,
        required: false,
    }
}

const fn aka(name: &'static str, aliases: &'static [&'static str], expect: Expect) -> Field {
    Field {
        name,
        aliases,
        expect,
        required: false,
    }
}

const fn required(name: &'static str, aliases: &'static [&'static str], expect: Expect) -> Field {
    Field {
        name,
        aliases,
        expect,
        required: true,
    }
}

/// An offer as held by a member ([`crate::OfferHolding`]).
pub const HOLDING: Expect = Expect::Object(&[
    required("offerId", &["offer_id", "id"], Expect::Id),
    // Read leniently (text and numbers too), so only a missing value is normal.
    field("active", Expect::Bool),
    aka("orderId", &["order_id"], Expect::String),
    aka(
        "expiresAt",
        &["expires_at", "expirationDate"],
        Expect::Timestamp,
    ),
]);

/// A member's progress in one course ([`crate::CourseProgress`]).
pub const COURSE_PROGRESS: Expect = Expect::Object(&[
    required("courseId", &["course_id"], Expect::Id),
    aka("activePosts", &["active_posts"], Expect::Posts),
    aka("completedPosts", &["completed_posts"], Expect::Posts),
    field("user", USER_REF),
]);

/// The member block of a progress answer ([`crate::UserRef`]).
pub const USER_REF: Expect = Expect::Object(&[
    required("uid", &["id"], Expect::Id),
    field("email", Expect::String),
    field("firstname", Expect::String),
    field("name", Expect::String),
]);

/// A member ([`crate::User`]).
pub const USER: Expect = Expect::Object(&[
    required("uid", &["id"], Expect::Id),
    required("email", &[], Expect::String),
    aka("firstname", &["firstName"], Expect::String),
    aka("name", &["lastname", "lastName"], Expect::String),
    aka("createdAt", &["created_at", "created"], Expect::Timestamp),
    field("active", Expect::Bool),
    aka("offers", &["userOffers"], Expect::ListOf(&HOLDING)),
    aka(
        "customProperties",
        &["custom_properties", "customUserProperties"],
        Expect::Either(&Expect::Map(&Expect::Any), &Expect::ListOf(&PROPERTY_VALUE)),
    ),
    field("progress", Expect::ListOf(&COURSE_PROGRESS)),
]);

/// One custom property value in a list form of `customProperties`.
const PROPERTY_VALUE: Expect = Expect::Object(&[
    aka("id", &["propertyId"], Expect::Id),
    field("value", Expect::Any),
]);

/// An offer ([`crate::Offer`]).
pub const OFFER: Expect = Expect::Object(&[
    required("id", &["_id"], Expect::Id),
    field("name", Expect::String),
    aka(
        "courseIds",
        &["hasCourseIds", "courses", "course_ids"],
        Expect::ListOf(&Expect::String),
    ),
    field("priority", Expect::Number),
    aka("updatedAt", &["updated_at"], Expect::Timestamp),
]);

/// A custom property definition ([`crate::CustomUserProperty`]).
pub const PROPERTY: Expect = Expect::Object(&[
    required("id", &["propertyId"], Expect::Id),
    aka("name", &["label"], Expect::String),
    aka("type", &["kind"], Expect::String),
    aka("schoolId", &["school_id"], Expect::Id),
]);

/// One exam submission ([`crate::ExamResult`]).
pub const EXAM_RESULT: Expect = Expect::Object(&[
    aka("uid", &["userId"], Expect::Id),
    field("email", Expect::String),
    aka("score", &["points"], Expect::Number),
    aka("maxScore", &["maxPoints"], Expect::Number),
    field("passed", Expect::Bool),
    aka("submittedAt", &["createdAt"], Expect::Timestamp),
]);

/// A field found under the keys of a page ([`crate::responses`]).
const fn page_key(keys: (&'static str, &'static [&'static str]), expect: Expect) -> Field {
    aka(keys.0, keys.1, expect)
}

/// `GET /users/list` ([`crate::UsersPage`]).
pub const USERS_PAGE: Expect = Expect::Either(
    &Expect::ListOf(&USER),
    &Expect::Object(&[
        page_key(USERS_LIST, Expect::ListOf(&USER)),
        page_key(CURSOR, Expect::Id),
    ]),
);

/// `GET /users/course-progress/list/{email}` ([`crate::ProgressPage`]).
pub const PROGRESS_PAGE: Expect = Expect::Either(
    &Expect::ListOf(&COURSE_PROGRESS),
    &Expect::Object(&[
        page_key(PROGRESS_LIST, Expect::ListOf(&COURSE_PROGRESS)),
        page_key(CURSOR, Expect::Id),
    ]),
);

/// `GET /offers` ([`crate::ListOf`] of [`crate::Offer`]).
pub const OFFERS: Expect = Expect::Either(
    &Expect::ListOf(&OFFER),
    &Expect::Object(&[page_key(LIST_OF, Expect::ListOf(&OFFER))]),
);

/// `GET /custom-user-properties/list`.
pub const PROPERTIES: Expect = Expect::Either(
    &Expect::ListOf(&PROPERTY),
    &Expect::Object(&[page_key(LIST_OF, Expect::ListOf(&PROPERTY))]),
);

/// A field whose JSON type is not the one this version reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Mismatch {
    pub path: String,
    pub expected: String,
    pub found: &'static str,
}

/// How an answer differs from what this version reads. Paths name fields only:
/// `users[].offers[].offerId`; a key that looks like data is shown as `*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Findings {
    /// Fields this version does not know (kept, but not read).
    pub unknown_fields: BTreeSet<String>,
    /// Fields whose type differs from what this version reads.
    pub type_mismatches: BTreeSet<Mismatch>,
    /// Required fields that were missing.
    pub missing_fields: BTreeSet<String>,
    /// Fields that came under another name this version also reads, as
    /// `path.name (read as canonical)`.
    pub other_names: BTreeSet<String>,
}

impl Findings {
    /// Nothing unexpected: every field known, of the expected type, none missing.
    pub fn is_clean(&self) -> bool {
        self.unknown_fields.is_empty()
            && self.type_mismatches.is_empty()
            && self.missing_fields.is_empty()
    }
}

/// Compares `v` with what this version reads.
pub fn check(v: &Value, expect: &Expect) -> Findings {
    let mut f = Findings::default();
    check_at(v, expect, "", &mut f);
    f
}

fn join(path: &str, key: &str) -> String {
    let key = if looks_like_field_name(key) { key } else { "*" };
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_at(v: &Value, expect: &Expect, path: &str, f: &mut Findings) {
    // An optional field sent as null is absent.
    if v.is_null() {
        return;
    }
    if !expect.fits(v) {
        f.type_mismatches.insert(Mismatch {
            path: if path.is_empty() {
                "(answer)".into()
            } else {
                path.into()
            },
            expected: expect.name(),
            found: kind_of(v),
        });
        return;
    }
    match (expect, v) {
        (Expect::Either(a, b), v) => {
            let pick = if a.fits(v) { a } else { b };
            check_at(v, pick, path, f);
        }
        (Expect::ListOf(item), Value::Array(items)) => {
            let path = format!("{path}[]");
            for i in items {
                check_at(i, item, &path, f);
            }
        }
        (Expect::Map(value), Value::Object(map)) => {
            let path = if path.is_empty() {
                "*".to_string()
            } else {
                format!("{path}.*")
            };
            for v in map.values() {
                check_at(v, value, &path, f);
            }
        }
        (Expect::Posts, Value::Array(items)) => {
            for i in items {
                if !matches!(i, Value::String(_) | Value::Number(_) | Value::Object(_)) {
                    f.type_mismatches.insert(Mismatch {
                        path: format!("{path}[]"),
                        expected: "post id or object".into(),
                        found: kind_of(i),
                    });
                }
            }
        }
        (Expect::Object(fields), Value::Object(map)) => {
            for (key, value) in map {
                let known = fields
                    .iter()
                    .find(|fd| fd.name == key || fd.aliases.contains(&key.as_str()));
                match known {
                    Some(fd) => {
                        if fd.name != key && !fd.name.is_empty() {
                            f.other_names.insert(format!(
                                "{} (read as {})",
                                join(path, key),
                                fd.name
                            ));
                        }
                        check_at(value, &fd.expect, &join(path, key), f);
                    }
                    None => {
                        f.unknown_fields.insert(join(path, key));
                    }
                }
            }
            for fd in fields.iter().filter(|fd| fd.required) {
                let present = std::iter::once(fd.name)
                    .chain(fd.aliases.iter().copied())
                    .any(|k| map.get(k).is_some_and(|v| !v.is_null()));
                if !present {
                    f.missing_fields.insert(join(path, fd.name));
                }
            }
        }
        _ => {}
    }
}

/// Smallest and largest of a count or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    pub min: usize,
    pub max: usize,
}

impl Range {
    fn add(range: &mut Option<Range>, n: usize) {
        *range = Some(match *range {
            Some(r) => Range {
                min: r.min.min(n),
                max: r.max.max(n),
            },
            None => Range { min: n, max: n },
        });
    }
}

/// The shape of every value seen at one place of an answer: types with how often each
/// was seen, lengths, and the fields of objects. Never a value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Shape {
    /// JSON type → how many values of it were seen here.
    pub types: BTreeMap<&'static str, usize>,
    /// Lengths of the strings (in characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_length: Option<Range>,
    /// Lengths of the arrays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_length: Option<Range>,
    /// The array items, all merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Shape>>,
    /// Fields of objects by name (their `types` count how many objects had them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Shape>,
    /// How many keys of an object looked like data (ids, e-mails) and are not named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_keys: Option<Range>,
    /// The values under those keys, merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_key_values: Option<Box<Shape>>,
}

impl Shape {
    /// The shape of one value.
    pub fn of(v: &Value) -> Shape {
        let mut s = Shape::default();
        s.add(v, false);
        s
    }

    /// The shape of `v`, where `expect` marks objects keyed by data.
    pub fn of_answer(v: &Value, expect: &Expect) -> Shape {
        let mut s = Shape::default();
        s.add_expected(v, Some(expect));
        s
    }

    fn add(&mut self, v: &Value, keyed_by_data: bool) {
        *self.types.entry(kind_of(v)).or_default() += 1;
        match v {
            Value::String(text) => Range::add(&mut self.string_length, text.chars().count()),
            Value::Array(items) => {
                Range::add(&mut self.array_length, items.len());
                let merged = self.items.get_or_insert_with(Box::default);
                for i in items {
                    merged.add(i, false);
                }
            }
            Value::Object(map) => {
                let mut data_keys = 0;
                for (key, value) in map {
                    if !keyed_by_data && looks_like_field_name(key) {
                        self.fields
                            .entry(key.clone())
                            .or_default()
                            .add(value, false);
                    } else {
                        data_keys += 1;
                        self.data_key_values
                            .get_or_insert_with(Box::default)
                            .add(value, false);
                    }
                }
                if data_keys > 0 || keyed_by_data {
                    Range::add(&mut self.data_keys, data_keys);
                }
            }
            _ => {}
        }
    }

    /// Like [`Shape::add`], following `expect` to know which objects are keyed by data.
    fn add_expected(&mut self, v: &Value, expect: Option<&Expect>) {
        let expect = match expect {
            Some(Expect::Either(a, b)) => Some(if a.fits(v) { *a } else { *b }),
            other => other,
        };
        match (expect, v) {
            (Some(Expect::Map(_)), Value::Object(_)) => self.add(v, true),
            (Some(Expect::ListOf(item)), Value::Array(items)) => {
                *self.types.entry("array").or_default() += 1;
                Range::add(&mut self.array_length, items.len());
                let merged = self.items.get_or_insert_with(Box::default);
                for i in items {
                    merged.add_expected(i, Some(item));
                }
            }
            (Some(Expect::Object(fields)), Value::Object(map)) => {
                *self.types.entry("object").or_default() += 1;
                let mut data_keys = 0;
                for (key, value) in map {
                    let spec = fields
                        .iter()
                        .find(|fd| fd.name == key || fd.aliases.contains(&key.as_str()))
                        .map(|fd| &fd.expect);
                    if looks_like_field_name(key) {
                        self.fields
                            .entry(key.clone())
                            .or_default()
                            .add_expected(value, spec);
                    } else {
                        data_keys += 1;
                        self.data_key_values
                            .get_or_insert_with(Box::default)
                            .add(value, false);
                    }
                }
                if data_keys > 0 {
                    Range::add(&mut self.data_keys, data_keys);
                }
            }
            _ => self.add(v, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A value of the expected type, for building test objects.
    fn sample(e: &Expect) -> Value {
        match e {
            Expect::Any | Expect::String | Expect::Id => json!("x"),
            Expect::Bool => json!(false),
            Expect::Number => json!(2),
            Expect::Timestamp => json!("2024-01-01T00:00:00.000Z"),
            Expect::Posts => json!(3),
            Expect::Map(_) => json!({"p": "v"}),
            Expect::Either(a, _) => sample(a),
            Expect::ListOf(item) => json!([sample(item)]),
            Expect::Object(fields) => Value::Object(
                fields
                    .iter()
                    .filter(|f| f.required)
                    .map(|f| (f.name.to_string(), sample(&f.expect)))
                    .collect(),
            ),
        }
    }

    /// The expectations and the wire types agree: every name listed is read into its
    /// field (not kept as unknown), and every field the type writes is listed.
    fn agrees<T>(spec: &Expect)
    where
        T: serde::de::DeserializeOwned + Serialize + schemars::JsonSchema,
    {
        let Expect::Object(fields) = spec else {
            panic!("an object spec")
        };
        let schema = schemars::schema_for!(T).to_value();
        let mut written: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed: Vec<&str> = fields.iter().map(|f| f.name).collect();
        written.sort_unstable();
        listed.sort_unstable();
        assert_eq!(written, listed, "{}", T::schema_name());
        for f in fields.iter() {
            for name in std::iter::once(f.name).chain(f.aliases.iter().copied()) {
                let mut obj = sample(spec);
                if let Some(o) = obj.as_object_mut() {
                    o.remove(f.name);
                    o.insert(name.to_string(), sample(&f.expect));
                }
                let decoded: T = serde_json::from_value(obj.clone())
                    .unwrap_or_else(|e| panic!("{} with {name}: {e}", T::schema_name()));
                let back = serde_json::to_value(&decoded).expect("encodes");
                assert!(
                    back.get(f.name).is_some_and(|v| !v.is_null())
                        && (name == f.name || back.get(name).is_none()),
                    "{}: `{name}` is not read as `{}`: {back}",
                    T::schema_name(),
                    f.name
                );
            }
        }
    }

    #[test]
    fn expectations_mirror_the_wire_types() {
        agrees::<crate::User>(&USER);
        agrees::<crate::OfferHolding>(&HOLDING);
        agrees::<crate::Offer>(&OFFER);
        agrees::<crate::UserRef>(&USER_REF);
        agrees::<crate::CourseProgress>(&COURSE_PROGRESS);
        agrees::<crate::CustomUserProperty>(&PROPERTY);
        agrees::<crate::ExamResult>(&EXAM_RESULT);
    }

    #[test]
    fn field_names_and_data_keys() {
        for name in [
            "uid",
            "createdAt",
            "hasCourseIds",
            "custom_properties",
            "address2",
            "_id",
            "nextPage",
        ] {
            assert!(looks_like_field_name(name), "{name}");
        }
        for data in [
            "h3K9xQ2mLp7RtV1wZc8B",
            "Qe4TnW8yUi2OpA6sDf0G",
            "anna@example.com",
            "Anna",
            "Müller GmbH",
            "DS24-104233",
            "",
            "abCDef",
            "2024",
        ] {
            assert!(!looks_like_field_name(data), "{data}");
        }
    }

    #[test]
    fn findings_name_unknown_fields_types_and_other_names() {
        let answer = json!({
            "data": [{
                "uid": "h3K9xQ2mLp7RtV1wZc8B",
                "email": "anna@example.com",
                "created": "2024-08-17T09:41:05.000Z",
                "offers": [{"offerId": "o", "active": "yes", "shoeSize": 44}],
                "customUserProperties": {"Lk3JhG5fDs7AzX9cVb1N": "Müller GmbH"},
                "progress": [{"courseId": "c", "activePosts": 2, "completedPosts": ["p"]}],
                "nickname": "Anni"
            }, {"email": "no-uid@example.com", "createdAt": "last week"}],
            "nextPage": null
        });
        let f = check(&answer, &USERS_PAGE);
        assert_eq!(
            f.unknown_fields,
            BTreeSet::from([
                "data[].nickname".to_string(),
                "data[].offers[].shoeSize".to_string()
            ])
        );
        assert_eq!(f.missing_fields, BTreeSet::from(["data[].uid".to_string()]));
        let mismatches: Vec<(&str, &str)> = f
            .type_mismatches
            .iter()
            .map(|m| (m.path.as_str(), m.found))
            .collect();
        assert_eq!(
            mismatches,
            [
                ("data[].createdAt", "string"),
                ("data[].offers[].active", "string")
            ]
        );
        assert!(f.other_names.contains("data (read as users)"), "{f:?}");
        assert!(f.other_names.contains("data[].created (read as createdAt)"));
        assert!(
            f.other_names
                .contains("data[].customUserProperties (read as customProperties)")
        );
        let text = serde_json::to_string(&f).expect("encodes");
        for value in ["h3K9", "anna@", "Lk3J", "Müller", "Anni", "2024-08"] {
            assert!(!text.contains(value), "{value} leaked: {text}");
        }
    }

    #[test]
    fn shapes_hold_no_values() {
        let answer = json!({
            "users": [
                {"uid": "h3K9xQ2mLp7RtV1wZc8B", "email": "anna@example.com", "active": true,
                 "customProperties": {"Lk3JhG5fDs7AzX9cVb1N": "Müller GmbH"},
                 "extraBlob": {"Qe4TnW8yUi2OpA6sDf0G": 3, "note": "hello"}},
                {"uid": "x", "email": "bo@example.com", "active": false, "score": 1.5}
            ],
            "nextPage": "h3K9xQ2mLp7RtV1wZc8B"
        });
        let shape = Shape::of_answer(&answer, &USERS_PAGE);
        let text = serde_json::to_string(&shape).expect("encodes");
        for value in [
            "h3K9", "anna@", "bo@", "Lk3J", "Müller", "Qe4T", "hello", "1.5", "true", "false",
        ] {
            assert!(!text.contains(value), "{value} leaked: {text}");
        }
        let users = shape.fields["users"].items.as_ref().expect("items");
        assert_eq!(
            users.fields["uid"].string_length,
            Some(Range { min: 1, max: 20 })
        );
        let props = &users.fields["customProperties"];
        assert_eq!(props.data_keys, Some(Range { min: 1, max: 1 }));
        let blob = &users.fields["extraBlob"];
        assert!(blob.fields.contains_key("note"));
        assert_eq!(blob.data_keys, Some(Range { min: 1, max: 1 }));
        assert_eq!(users.fields["score"].types.get("number"), Some(&1));
    }
}
