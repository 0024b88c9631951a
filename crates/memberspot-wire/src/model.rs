//! Resources returned by the API.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::lenient::{self, Posts};
use crate::shape;
use crate::{Extra, Timestamp};

/// A member of the school.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct User {
    /// Stable user id (used by the login-token call).
    #[serde(deserialize_with = "lenient::string", alias = "id")]
    pub uid: String,
    /// E-mail address, unique within the school.
    pub email: String,
    /// First name.
    #[serde(
        default,
        alias = "firstName",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub firstname: Option<String>,
    /// Last name (the API calls the last name `name`).
    #[serde(
        default,
        alias = "lastname",
        alias = "lastName",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// When the member was created.
    #[serde(
        default,
        alias = "created_at",
        alias = "created",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<Timestamp>,
    /// Whether the member (not one of their offers) is active, when the API says so.
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub active: Option<bool>,
    /// Offers the member holds, active or not.
    #[serde(default, alias = "userOffers", deserialize_with = "lenient::vec")]
    pub offers: Vec<OfferHolding>,
    /// Custom user property values, by property id.
    #[serde(
        default,
        alias = "custom_properties",
        alias = "customUserProperties",
        deserialize_with = "custom_properties"
    )]
    pub custom_properties: BTreeMap<String, Value>,
    /// Course progress embedded in the member, when the API includes it: per course the
    /// posts started (`activePosts`) and completed (`completedPosts`), as counts or ids.
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress: Option<UserProgress>,
    /// Fields this version does not know, kept verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl User {
    pub fn holding(&self, offer_id: &str) -> Option<&OfferHolding> {
        self.offers.iter().find(|h| h.offer_id == offer_id)
    }

    /// The embedded progress per course; empty when there is none or it came in a form
    /// this version does not read (then it is kept in [`UserProgress::Other`]).
    pub fn course_progress(&self) -> &[CourseProgress] {
        match &self.progress {
            Some(UserProgress::Courses(courses)) => courses,
            _ => &[],
        }
    }
}

/// Progress embedded in a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum UserProgress {
    /// One entry per course: `[{courseId, activePosts, completedPosts}]`.
    Courses(Vec<CourseProgress>),
    /// Any other form, kept as it came.
    Other(Value),
}

/// Custom properties arrive as a map `{id: value}` or as a list of
/// `{id|propertyId, value}` objects; both become a map.
fn custom_properties<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Value>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Object(map)) => map.into_iter().collect(),
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| {
                let id = item
                    .get("id")
                    .or_else(|| item.get("propertyId"))?
                    .as_str()?
                    .to_string();
                Some((id, item.get("value").cloned().unwrap_or(Value::Null)))
            })
            .collect(),
        _ => BTreeMap::new(),
    })
}

/// An offer as held by a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct OfferHolding {
    /// The offer's id.
    #[serde(alias = "offer_id", alias = "id", deserialize_with = "lenient::string")]
    pub offer_id: String,
    /// Whether the holding currently grants access (false when revoked or expired).
    #[serde(default = "yes", deserialize_with = "lenient_bool")]
    pub active: bool,
    /// Order id the offer was granted under, if any.
    #[serde(
        default,
        alias = "order_id",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub order_id: Option<String>,
    /// When the holding expires, if it does.
    #[serde(
        default,
        alias = "expires_at",
        alias = "expirationDate",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Timestamp>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

fn yes() -> bool {
    true
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::String(s) => !matches!(s.as_str(), "false" | "0" | "inactive"),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    })
}

/// A product that grants access to courses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct Offer {
    /// The offer id (the Zugangs-ID).
    #[serde(deserialize_with = "lenient::string", alias = "_id")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Courses the offer grants access to.
    #[serde(
        default,
        alias = "hasCourseIds",
        alias = "courses",
        alias = "course_ids",
        deserialize_with = "lenient::vec"
    )]
    pub course_ids: Vec<String>,
    /// Priority used by Memberspot for ordering offers.
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<f64>,
    /// Last modification.
    #[serde(
        default,
        alias = "updated_at",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<Timestamp>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Short user block embedded in progress answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct UserRef {
    #[serde(deserialize_with = "lenient::string", alias = "id")]
    pub uid: String,
    #[serde(default)]
    pub email: String,
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub firstname: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A member's progress in one course.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct CourseProgress {
    /// The course.
    #[serde(alias = "course_id", deserialize_with = "lenient::string")]
    pub course_id: String,
    /// Posts (lessons) the member has started but not completed: their ids, or how many.
    #[serde(default, alias = "active_posts")]
    pub active_posts: Posts,
    /// Posts the member has completed: their ids, or how many.
    #[serde(default, alias = "completed_posts")]
    pub completed_posts: Posts,
    /// The member, when the answer includes it.
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<UserRef>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Definition of a school-defined extra profile field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct CustomUserProperty {
    /// Id used when setting values.
    #[serde(deserialize_with = "lenient::string", alias = "propertyId")]
    pub id: String,
    /// Label shown in the dashboard.
    #[serde(default, alias = "label")]
    pub name: String,
    /// Value type, e.g. `text`.
    #[serde(
        default,
        rename = "type",
        alias = "kind",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<String>,
    /// The school the property belongs to, when the API names it.
    #[serde(
        default,
        alias = "school_id",
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub school_id: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// One member's submission of an exam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub struct ExamResult {
    #[serde(
        default,
        alias = "userId",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub uid: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub email: Option<String>,
    /// Points scored.
    #[serde(
        default,
        alias = "points",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub score: Option<f64>,
    /// Maximum points.
    #[serde(
        default,
        alias = "maxPoints",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_score: Option<f64>,
    /// Whether the submission passed.
    #[serde(
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub passed: Option<bool>,
    #[serde(
        default,
        alias = "createdAt",
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub submitted_at: Option<Timestamp>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Serde's derive fails a whole object when a field arrives under two of its names
/// (`courseIds` and `hasCourseIds`). These types read the first name present (the
/// canonical one first) and keep the others in `extra`, as they came.
macro_rules! one_name_per_field {
    ($($ty:ty => $spec:expr),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let mut map = serde_json::Map::<String, Value>::deserialize(d)?;
                let doubles = lenient::take_second_names(&mut map, &$spec);
                let mut v = <$ty>::deserialize(Value::Object(map)).map_err(serde::de::Error::custom)?;
                v.extra.extend(doubles);
                Ok(v)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, s)
            }
        }
    )*};
}

one_name_per_field! {
    User => shape::USER,
    OfferHolding => shape::HOLDING,
    Offer => shape::OFFER,
    UserRef => shape::USER_REF,
    CourseProgress => shape::COURSE_PROGRESS,
    CustomUserProperty => shape::PROPERTY,
    ExamResult => shape::EXAM_RESULT,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PostRef;
    use serde_json::json;

    #[test]
    fn user_decodes_aliases_and_keeps_unknown_fields() {
        let u: User = serde_json::from_value(json!({
            "uid": 42, "email": "a@b.de", "firstName": "Ada", "lastname": "L",
            "createdAt": {"_seconds": 1, "_nanoseconds": 0},
            "userOffers": [{"offer_id": "o1", "active": "false"}, 17, {"offerId": "o2"}],
            "customProperties": [{"propertyId": "p1", "value": "x"}],
            "progress": {"c1": 50}
        }))
        .expect("decodes");
        assert_eq!(u.uid, "42");
        assert_eq!(u.firstname.as_deref(), Some("Ada"));
        assert_eq!(u.name.as_deref(), Some("L"));
        assert_eq!(
            u.offers.len(),
            2,
            "the malformed holding is skipped, not fatal"
        );
        assert!(!u.offers[0].active);
        assert!(u.offers[1].active);
        assert_eq!(u.custom_properties.get("p1"), Some(&json!("x")));
        // A progress form this version does not read is kept as it came.
        assert_eq!(
            u.progress,
            Some(UserProgress::Other(json!({"c1": 50}))),
            "kept, not dropped"
        );
        assert!(u.course_progress().is_empty());
    }

    /// The shapes another integration platform's published types show, all at once.
    #[test]
    fn user_decodes_the_alternate_shapes_without_losing_anything() {
        let u: User = serde_json::from_value(json!({
            "uid": "u1", "email": "a@b.de",
            "created": "2024-08-17T09:41:05.000Z",
            "active": true,
            "customUserProperties": {"p1": "Müller GmbH"},
            "progress": [
                {"courseId": "c1", "activePosts": 2, "completedPosts": 5},
                {"courseId": "c2", "activePosts": 0, "completedPosts": ["x", "y"]}
            ]
        }))
        .expect("decodes");
        assert_eq!(
            u.created_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-08-17T09:41:05.000Z")
        );
        assert_eq!(u.active, Some(true));
        assert_eq!(u.custom_properties.get("p1"), Some(&json!("Müller GmbH")));
        let p = u.course_progress();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].active_posts, Posts::Count(2), "a count stays a count");
        assert_eq!(p[0].completed_posts.count(), 5);
        assert_eq!(p[0].completed_posts.ids(), None);
        assert_eq!(
            p[1].active_posts,
            Posts::Count(0),
            "zero is not an empty list"
        );
        assert_eq!(p[1].completed_posts.count(), 2);
        assert!(u.extra.is_empty(), "every field was read: {:?}", u.extra);
        // And it is written back as read: counts as numbers.
        let v = serde_json::to_value(&u).expect("encodes");
        assert_eq!(v["progress"][0]["completedPosts"], json!(5));
        assert_eq!(v["progress"][1]["completedPosts"], json!(["x", "y"]));
        assert_eq!(v["active"], json!(true));
    }

    #[test]
    fn offer_and_property_alternates() {
        let o: Offer = serde_json::from_value(json!({
            "id": "o1", "name": "Kurs", "hasCourseIds": ["c1", "c2"]
        }))
        .expect("decodes");
        assert_eq!(o.course_ids, ["c1", "c2"]);
        assert!(o.extra.is_empty());
        // Both names at once: the canonical one is read, the other kept; the offer decodes.
        let o: Offer = serde_json::from_value(json!({
            "id": "o1", "hasCourseIds": ["b"], "courseIds": ["a"]
        }))
        .expect("decodes");
        assert_eq!(o.course_ids, ["a"]);
        assert_eq!(o.extra.get("hasCourseIds"), Some(&json!(["b"])));
        let u: User = serde_json::from_value(json!({
            "uid": "u", "email": "e", "created": "2024-01-01", "createdAt": "2024-01-02"
        }))
        .expect("decodes");
        assert_eq!(
            u.created_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-01-02T00:00:00.000Z")
        );
        assert_eq!(u.extra.get("created"), Some(&json!("2024-01-01")));
        let p: CustomUserProperty = serde_json::from_value(json!({
            "id": "p1", "name": "Firma", "type": "text", "schoolId": "s1"
        }))
        .expect("decodes");
        assert_eq!(p.school_id.as_deref(), Some("s1"));
        assert!(p.extra.is_empty());
        assert_eq!(
            serde_json::to_value(&p).expect("encodes")["schoolId"],
            json!("s1")
        );
    }

    #[test]
    fn odd_optional_field_does_not_fail_the_user() {
        let u: User = serde_json::from_value(json!({
            "uid": "u", "email": "a@b.de", "firstname": 7, "createdAt": "not a date"
        }))
        .expect("decodes");
        assert_eq!(u.firstname, None);
        assert_eq!(u.created_at, None);
    }

    #[test]
    fn canonical_user_serialisation() {
        let u: User = serde_json::from_value(json!({
            "uid": "u1", "email": "a@b.de", "firstname": "A", "name": "B",
            "offers": [{"offerId": "o", "active": true, "orderId": "x"}]
        }))
        .expect("decodes");
        let v = serde_json::to_value(&u).expect("encodes");
        assert_eq!(
            v,
            json!({"uid": "u1", "email": "a@b.de", "firstname": "A", "name": "B",
                   "offers": [{"offerId": "o", "active": true, "orderId": "x"}],
                   "customProperties": {}})
        );
    }

    #[test]
    fn progress_accepts_ids_or_objects() {
        let p: CourseProgress = serde_json::from_value(json!({
            "courseId": "c", "activePosts": ["p1"], "completedPosts": [{"id": "p2"}, {"postId": "p3"}]
        }))
        .expect("decodes");
        assert_eq!(p.active_posts, Posts::Ids(vec![PostRef("p1".into())]));
        assert_eq!(
            p.completed_posts,
            Posts::Ids(vec![PostRef("p2".into()), PostRef("p3".into())])
        );
    }
}
