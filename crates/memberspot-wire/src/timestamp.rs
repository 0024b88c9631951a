use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time as the API may encode it.
///
/// Serialises as an RFC 3339 / ISO-8601 UTC string. Deserialises from such a
/// string, from epoch milliseconds (or seconds, when the number is too small
/// to be milliseconds), or from a Firestore-style `{_seconds, _nanoseconds}`
/// object, since the Memberspot backend is Firebase-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now())
    }

    /// Parses the string forms accepted on the wire: RFC 3339 with offset,
    /// a naive date-time (taken as UTC) or a bare date (midnight UTC).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(Timestamp(t.with_timezone(&Utc)));
        }
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
            return Some(Timestamp(Utc.from_utc_datetime(&t)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return d
                .and_hms_opt(0, 0, 0)
                .map(|t| Timestamp(Utc.from_utc_datetime(&t)));
        }
        None
    }

    fn from_number(n: f64) -> Option<Self> {
        // Below 10^11 the value cannot be milliseconds of any date after 1973.
        let millis = if n.abs() < 1e11 { n * 1000.0 } else { n };
        Utc.timestamp_millis_opt(millis as i64)
            .single()
            .map(Timestamp)
    }

    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// Decodes any of the accepted encodings from a JSON value.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        match v {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => n.as_f64().and_then(Self::from_number),
            Value::Object(o) => {
                let secs = o.get("_seconds").or_else(|| o.get("seconds"))?.as_i64()?;
                let nanos = o
                    .get("_nanoseconds")
                    .or_else(|| o.get("nanoseconds"))
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0);
                Utc.timestamp_opt(secs, nanos.min(999_999_999) as u32)
                    .single()
                    .map(Timestamp)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Self::from_json(&v).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected an ISO-8601 string, epoch milliseconds or {{_seconds,_nanoseconds}}, got {v}"
            ))
        })
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "ISO-8601 date-time in UTC, e.g. 2026-01-31T23:59:59.000Z"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_every_reported_encoding() {
        let want = Timestamp::parse("2024-03-01T12:00:00Z").expect("valid");
        for v in [
            json!("2024-03-01T12:00:00Z"),
            json!("2024-03-01T13:00:00+01:00"),
            json!("2024-03-01T12:00:00.000"),
            json!(1_709_294_400_000_i64),
            json!(1_709_294_400_i64),
            json!({"_seconds": 1_709_294_400_i64, "_nanoseconds": 0}),
        ] {
            assert_eq!(Timestamp::from_json(&v), Some(want), "{v}");
        }
        assert_eq!(
            Timestamp::parse("2024-03-01").map(|t| t.to_rfc3339()),
            Some("2024-03-01T00:00:00.000Z".to_string())
        );
        assert!(Timestamp::from_json(&json!(true)).is_none());
        assert!(Timestamp::parse("yesterday").is_none());
    }
}
