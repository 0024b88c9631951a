//! Request and response plumbing with Express-like leniency: bodies are JSON
//! whatever the Content-Type, queries are parsed like `qs`, path params are
//! percent-decoded (a literal `+` stays a `+`).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::errors::ApiError;

/// Serialises `body` as the answer; falls back to a bare 500 if that fails.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(e) => {
            tracing::error!("could not serialise an answer: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"statusCode":500,"message":"Internal server error"}"#.to_vec(),
            )
        }
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// A text answer, with the type Express gives a string sent as the body.
pub fn text_response(status: StatusCode, text: &'static str) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Parses a request body. Empty (or blank) = `{}` so that a POST without a
/// body gets validation errors, not a parse error. A top-level array also
/// becomes `{}` (class-validator then reports the missing fields); a bare
/// string or number is rejected like body-parser's strict mode does.
pub fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Array(_)) => Ok(Map::new()),
        Ok(_) => Err(malformed(1, 1)),
        Err(e) => Err(malformed(e.line(), e.column())),
    }
}

fn malformed(line: usize, column: usize) -> ApiError {
    ApiError::bad_request(format!(
        "Unexpected token in JSON at line {line} column {column}"
    ))
}

/// What a query parameter holds.
#[derive(Debug, PartialEq)]
pub enum QueryValue<'a> {
    Missing,
    One(&'a str),
    /// Repeated (`a=1&a=2`) or bracketed (`a[]=1`): `qs` makes an array of it.
    Many,
}

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String, bool)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let key = decode_query_part(k);
                match key.strip_suffix("[]") {
                    Some(base) => (base.to_string(), decode_query_part(v), true),
                    None => (key, decode_query_part(v), false),
                }
            })
            .collect();
        Query { pairs }
    }

    pub fn get(&self, name: &str) -> QueryValue<'_> {
        let mut found = self.pairs.iter().filter(|(k, _, _)| k == name);
        match (found.next(), found.next()) {
            (None, _) => QueryValue::Missing,
            (Some((_, _, true)), _) | (Some(_), Some(_)) => QueryValue::Many,
            (Some((_, v, false)), None) => QueryValue::One(v),
        }
    }
}

/// `+` is a space in a query string; bad escapes are kept verbatim like `qs` does.
fn decode_query_part(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Percent-decodes one path segment; `+` is not special in paths.
pub fn decode_path_param(raw: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request(format!("Failed to decode param '{raw}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"").map(|m| m.len()), Ok(0));
        assert_eq!(parse_body(b"  \n").map(|m| m.len()), Ok(0));
        assert_eq!(parse_body(b"[1]").map(|m| m.len()), Ok(0));
        let err = parse_body(b"{\n \"a\": ,}").err().map(|e| e.message.join());
        assert_eq!(
            err.as_deref(),
            Some("Unexpected token in JSON at line 2 column 7")
        );
        assert!(parse_body(b"\"x\"").is_err());
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("a=x+y%40z&b=1&b=2&c[]=1&d=&e"));
        assert_eq!(q.get("a"), QueryValue::One("x y@z"));
        assert_eq!(q.get("b"), QueryValue::Many);
        assert_eq!(q.get("c"), QueryValue::Many);
        assert_eq!(q.get("d"), QueryValue::One(""));
        assert_eq!(q.get("e"), QueryValue::One(""));
        assert_eq!(q.get("z"), QueryValue::Missing);
        assert_eq!(Query::parse(Some("a=%zz")).get("a"), QueryValue::One("%zz"));
    }

    #[test]
    fn path_params() {
        assert_eq!(
            decode_path_param("a%2Bb%40x.de").ok().as_deref(),
            Some("a+b@x.de")
        );
        assert_eq!(
            decode_path_param("a+b@x.de").ok().as_deref(),
            Some("a+b@x.de")
        );
        assert!(decode_path_param("%FF").is_err());
    }
}
