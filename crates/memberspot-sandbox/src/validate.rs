//! Field-by-field validation with class-validator's wording.
//!
//! Each check records its messages and returns `None` on failure, so one
//! request reports every problem at once, as NestJS's ValidationPipe does.

use chrono::{DateTime, Utc};
use memberspot_wire::Timestamp;
use serde_json::{Map, Value};

use crate::errors::ApiError;
use crate::http::{Query, QueryValue};
use crate::school::normalize_email;

/// Largest page a list route hands out.
pub const MAX_PAGE: usize = 100;
/// Page size when `pageLength` is not given.
pub const DEFAULT_PAGE: usize = 10;

/// A syntactic e-mail check in the spirit of validator.js `isEmail`:
/// `local@domain.tld`, no spaces, sane dots and hyphens.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 253 {
        return false;
    }
    const LOCAL_EXTRA: &str = "!#$%&'*+/=?^_`{|}~.-";
    let local_ok = local
        .chars()
        .all(|c| c.is_alphanumeric() || LOCAL_EXTRA.contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    let tld_ok = labels.last().is_some_and(|tld| {
        tld.len() >= 2 && (tld.chars().all(char::is_alphabetic) || tld.starts_with("xn--"))
    });
    local_ok && labels_ok && tld_ok
}

/// A path e-mail: trimmed, checked, lower-cased.
pub fn path_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim();
    if is_email(email) {
        Ok(normalize_email(email))
    } else {
        Err(ApiError::validation(vec!["email must be an email".into()]))
    }
}

/// Collects the problems of one JSON body.
pub struct BodyCheck<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<String>,
}

/// Reads `true`/`false` and, leniently, their string forms.
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

impl<'a> BodyCheck<'a> {
    pub fn new(body: &'a Map<String, Value>) -> Self {
        BodyCheck {
            body,
            errors: Vec::new(),
        }
    }

    /// Absent and `null` both count as "not given", like `@IsOptional()`.
    fn given(&self, field: &str) -> Option<&'a Value> {
        self.body.get(field).filter(|v| !v.is_null())
    }

    pub fn fail(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// `@IsEmail()`: required; answers the normalised address.
    pub fn email(&mut self, field: &str) -> Option<String> {
        match self.given(field) {
            Some(Value::String(s)) if is_email(s.trim()) => Some(normalize_email(s)),
            _ => {
                self.fail(format!("{field} must be an email"));
                None
            }
        }
    }

    /// `@IsString() @IsNotEmpty()`.
    pub fn required_string(&mut self, field: &str) -> Option<String> {
        match self.given(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::String(_)) => {
                self.fail(format!("{field} should not be empty"));
                None
            }
            Some(_) => {
                self.fail(format!("{field} must be a string"));
                None
            }
            None => {
                self.fail(format!("{field} should not be empty"));
                self.fail(format!("{field} must be a string"));
                None
            }
        }
    }

    /// `@IsOptional() @IsString()`. The outer `Option` is `None` on a type error.
    pub fn optional_string(&mut self, field: &str) -> Option<Option<String>> {
        match self.given(field) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s.trim().to_string())),
            Some(_) => {
                self.fail(format!("{field} must be a string"));
                None
            }
        }
    }

    /// `@IsOptional() @IsBoolean()`, also taking `"true"`/`"false"`.
    pub fn optional_bool(&mut self, field: &str) -> Option<Option<bool>> {
        match self.given(field) {
            None => Some(None),
            Some(v) => match as_bool(v) {
                Some(b) => Some(Some(b)),
                None => {
                    self.fail(format!("{field} must be a boolean value"));
                    None
                }
            },
        }
    }

    /// `@IsOptional() @IsDateString()`.
    pub fn optional_date(&mut self, field: &str) -> Option<Option<DateTime<Utc>>> {
        match self.given(field) {
            None => Some(None),
            Some(Value::String(s)) if Timestamp::parse(s).is_some() => {
                Some(Timestamp::parse(s).map(|t| t.0))
            }
            Some(_) => {
                self.fail(format!("{field} must be a valid ISO 8601 date string"));
                None
            }
        }
    }

    /// `@IsArray()`; answers the elements.
    pub fn array(&mut self, field: &str) -> Option<&'a Vec<Value>> {
        match self.given(field) {
            Some(Value::Array(items)) => Some(items),
            _ => {
                self.fail(format!("{field} must be an array"));
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

/// `lastLoadedId` and `pageLength` of the list routes.
pub struct PageParams {
    pub last_loaded_id: Option<String>,
    pub page_length: usize,
}

/// Collects the problems of one query string.
pub struct QueryCheck<'a> {
    query: &'a Query,
    errors: Vec<String>,
}

impl<'a> QueryCheck<'a> {
    pub fn new(query: &'a Query) -> Self {
        QueryCheck {
            query,
            errors: Vec::new(),
        }
    }

    /// `@IsOptional() @IsString()`; an empty value counts as not given.
    pub fn optional_string(&mut self, name: &str) -> Option<String> {
        match self.query.get(name) {
            QueryValue::Missing => None,
            QueryValue::One(v) if v.trim().is_empty() => None,
            QueryValue::One(v) => Some(v.trim().to_string()),
            QueryValue::Many => {
                self.errors.push(format!("{name} must be a string"));
                None
            }
        }
    }

    /// `"true"`/`"false"` in any case.
    pub fn optional_bool(&mut self, name: &str) -> Option<bool> {
        match self.query.get(name) {
            QueryValue::Missing => None,
            QueryValue::One(v) if v.trim().is_empty() => None,
            QueryValue::One(v) if v.trim().eq_ignore_ascii_case("true") => Some(true),
            QueryValue::One(v) if v.trim().eq_ignore_ascii_case("false") => Some(false),
            _ => {
                self.errors.push(format!("{name} must be a boolean value"));
                None
            }
        }
    }

    /// `@Type(() => Number) @IsInt() @Min(1) @Max(100)`, with NaN reported once.
    pub fn page(&mut self) -> PageParams {
        let last_loaded_id = self.optional_string("lastLoadedId");
        let page_length = match self.query.get("pageLength") {
            QueryValue::Missing => DEFAULT_PAGE,
            QueryValue::One(v) if v.trim().is_empty() => DEFAULT_PAGE,
            QueryValue::One(v) => match v.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n.fract() == 0.0 => {
                    if n > MAX_PAGE as f64 {
                        self.errors
                            .push(format!("pageLength must not be greater than {MAX_PAGE}"));
                    } else if n < 1.0 {
                        self.errors
                            .push("pageLength must not be less than 1".into());
                    }
                    n.clamp(1.0, MAX_PAGE as f64) as usize
                }
                _ => {
                    self.errors
                        .push("pageLength must be an integer number".into());
                    DEFAULT_PAGE
                }
            },
            QueryValue::Many => {
                self.errors
                    .push("pageLength must be an integer number".into());
                DEFAULT_PAGE
            }
        };
        PageParams {
            last_loaded_id,
            page_length,
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails() {
        for ok in [
            "a@b.de",
            "anna.schmidt7@example.com",
            "a+b@x.de",
            "Ä@bücher.de",
            "x@sub.xn--p1ai",
        ] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "a b@c.de",
            "@c.de",
            "a@.de",
            "a@b.c",
            "a@-b.de",
            "a..b@c.de",
            "a@b..de",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    fn messages(r: Result<(), ApiError>) -> Vec<String> {
        match r.map_err(|e| e.message) {
            Err(memberspot_wire::OneOrMany::Many(m)) => m,
            _ => Vec::new(),
        }
    }

    #[test]
    fn body_messages() {
        let body = json!({"email": "nope", "grantOffer": 5, "firstname": null, "name": 3, "active": "yes",
                          "expiresAt": "soon", "emails": "x"});
        let Value::Object(map) = body else { return };
        let mut c = BodyCheck::new(&map);
        assert_eq!(c.email("email"), None);
        assert_eq!(c.required_string("grantOffer"), None);
        assert_eq!(c.required_string("missing"), None);
        assert_eq!(c.optional_string("firstname"), Some(None));
        assert_eq!(c.optional_string("name"), None);
        assert_eq!(c.optional_bool("active"), None);
        assert_eq!(c.optional_date("expiresAt"), None);
        assert_eq!(c.array("emails"), None);
        assert_eq!(
            messages(c.finish()),
            [
                "email must be an email",
                "grantOffer must be a string",
                "missing should not be empty",
                "missing must be a string",
                "name must be a string",
                "active must be a boolean value",
                "expiresAt must be a valid ISO 8601 date string",
                "emails must be an array"
            ]
        );
    }

    #[test]
    fn page_messages() {
        let check = |q: &str| {
            let q = Query::parse(Some(q));
            let mut c = QueryCheck::new(&q);
            let p = c.page();
            (p.page_length, messages(c.finish()))
        };
        assert_eq!(check("pageLength=25"), (25, vec![]));
        assert_eq!(check(""), (10, vec![]));
        assert_eq!(
            check("pageLength=abc").1,
            ["pageLength must be an integer number"]
        );
        assert_eq!(
            check("pageLength=2.5").1,
            ["pageLength must be an integer number"]
        );
        assert_eq!(
            check("pageLength=101").1,
            ["pageLength must not be greater than 100"]
        );
        assert_eq!(
            check("pageLength=0").1,
            ["pageLength must not be less than 1"]
        );
    }
}
