//! Byte-exact `application/x-www-form-urlencoded` parsing.
//!
//! We decode to bytes (not `String`) because signatures (Digistore24) are over
//! the decoded bytes as sent, and PayPal bodies may be windows-1252.

/// Decode `+` and `%XX` once. Invalid `%` sequences are kept literally, like
/// browsers and PHP do.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = input
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced).collect()
}

/// All pairs in body order (duplicates kept).
pub(crate) fn parse_bytes(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    body.split(|&b| b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = match part.iter().position(|&b| b == b'=') {
                Some(pos) => (&part[..pos], &part[pos + 1..]),
                None => (part, &[][..]),
            };
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Text charset of a form body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charset {
    Utf8,
    /// windows-1252 (superset of ISO-8859-1 for printable text).
    Windows1252,
}

impl Charset {
    pub(crate) fn from_label(label: &str) -> Self {
        match label.trim().to_ascii_lowercase().as_str() {
            "windows-1252" | "cp1252" | "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1"
            | "us-ascii" | "iso-8859-15" => Self::Windows1252,
            _ => Self::Utf8,
        }
    }
}

/// windows-1252 code points for 0x80..=0x9F; the rest maps to Latin-1.
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}', '\u{017D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{9D}', '\u{017E}', '\u{0178}',
];

pub(crate) fn decode_cp1252(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

/// Decode text in the given charset. UTF-8 that turns out invalid falls back
/// to windows-1252 (tolerant: legacy senders mislabel their charset).
pub(crate) fn decode_text(bytes: &[u8], charset: Charset) -> String {
    match charset {
        Charset::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => decode_cp1252(bytes),
        },
        Charset::Windows1252 => decode_cp1252(bytes),
    }
}

/// Decoded form fields as text; the last occurrence of a key wins (PHP `$_POST`
/// semantics, used consistently for signing and reading).
#[derive(Debug, Clone, Default)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Parse with an explicit charset, or (if `charset_field` is given) the
    /// charset named in that field of the body itself (PayPal `charset`).
    pub(crate) fn parse(body: &[u8], charset_field: Option<&str>) -> Self {
        let raw = parse_bytes(body);
        let charset = charset_field
            .and_then(|name| {
                raw.iter()
                    .rev()
                    .find(|(k, _)| k.as_slice() == name.as_bytes())
                    .map(|(_, v)| Charset::from_label(&String::from_utf8_lossy(v)))
            })
            .unwrap_or(Charset::Utf8);
        let pairs = raw
            .iter()
            .map(|(k, v)| (decode_text(k, charset), decode_text(v, charset)))
            .collect();
        Self { pairs }
    }

    /// Last value for `key`, `None` when absent.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Like [`Form::get`] but treats empty values as absent (empty fields carry
    /// no meaning; Digistore24 does not even sign them).
    pub(crate) fn non_empty(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// First non-empty value among `keys`.
    pub(crate) fn first_of(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.non_empty(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_keeps_bad_escapes() {
        let pairs = parse_bytes(b"a=x+y%2Bz&b=%zz%4&c");
        assert_eq!(pairs[0], (b"a".to_vec(), b"x y+z".to_vec()));
        assert_eq!(pairs[1], (b"b".to_vec(), b"%zz%4".to_vec()));
        assert_eq!(pairs[2], (b"c".to_vec(), Vec::new()));
    }

    #[test]
    fn cp1252_decoding() {
        assert_eq!(decode_cp1252(&[0x4A, 0xF6, 0x80]), "Jö€");
        let f = Form::parse(b"charset=windows-1252&n=J%F6rg", Some("charset"));
        assert_eq!(f.get("n"), Some("Jörg"));
        // Invalid UTF-8 without a charset label falls back to cp1252.
        let f = Form::parse(b"n=M%FCller", None);
        assert_eq!(f.get("n"), Some("Müller"));
    }
}
