//! Money amounts in a currency's own units, exact (fixed point, four decimals), so a rule's
//! `min_amount = "49.00"` compares with what a provider sent without floating point.

use std::fmt;
use std::str::FromStr;

/// Ten-thousandths of a currency unit: enough for every ISO 4217 exponent in use (0 to 3).
const SCALE: i128 = 10_000;

/// An amount in the currency's units (euros, not cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i128);

impl Amount {
    pub fn from_units(units: i64) -> Amount {
        Amount(i128::from(units) * SCALE)
    }

    /// `minor` minor units of `currency` (cents for EUR, yen for JPY, fils for KWD).
    pub fn from_minor(minor: i64, currency: Option<&str>) -> Amount {
        let exponent = currency.map_or(2, minor_unit_exponent);
        Amount(i128::from(minor) * SCALE / 10_i128.pow(exponent))
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Parses a provider's decimal: `47`, `47.5`, `47.00`, `-3,20` (a comma as the decimal
    /// separator, as German shops send it). More than four decimals are refused.
    pub fn parse_lenient(text: &str) -> Result<Amount, AmountError> {
        parse(text, true)
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Strict form for configuration: digits with an optional `.` and up to four decimals.
    fn from_str(text: &str) -> Result<Amount, AmountError> {
        parse(text, false)
    }
}

impl fmt::Display for Amount {
    /// At least two decimals (`49.00`), more only when present (`0.125`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / SCALE as u128;
        let mut frac = format!("{:04}", abs % SCALE as u128);
        while frac.len() > 2 && frac.ends_with('0') {
            frac.pop();
        }
        write!(f, "{sign}{whole}.{frac}")
    }
}

/// Written as its decimal text (`"49.00"`), never as a float.
impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is not a decimal amount (write it like \"49.00\")")]
    NotANumber,
    #[error("has more than four decimals")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
}

fn parse(text: &str, lenient: bool) -> Result<Amount, AmountError> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let separators: &[char] = if lenient { &['.', ','] } else { &['.'] };
    let (whole, frac) = digits.split_once(separators).unwrap_or((digits, ""));
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
        return Err(AmountError::NotANumber);
    }
    if frac.len() > 4 {
        return Err(AmountError::TooPrecise);
    }
    if whole.len() > 20 {
        return Err(AmountError::TooLarge);
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| AmountError::TooLarge)?
    };
    let frac_value: i128 = format!("{frac:0<4}")
        .parse()
        .map_err(|_| AmountError::NotANumber)?;
    let v = whole * SCALE + frac_value;
    Ok(Amount(if negative { -v } else { v }))
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217), for providers that
/// send minor units (Stripe, ThriveCart). Unknown currencies have two.
pub fn minor_unit_exponent(currency: &str) -> u32 {
    const ZERO: [&str; 16] = [
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];
    let c = currency.trim().to_ascii_uppercase();
    if ZERO.contains(&c.as_str()) {
        0
    } else if THREE.contains(&c.as_str()) {
        3
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_comparing_and_printing() {
        let a = |s: &str| s.parse::<Amount>().expect(s);
        assert_eq!(a("49"), Amount::from_units(49));
        assert_eq!(a("49.00"), a("49"));
        assert!(a("48.99") < a("49.00"));
        assert!(a("0.01") < a("49"));
        assert_eq!(a("49.5").to_string(), "49.50");
        assert_eq!(a("0.125").to_string(), "0.125");
        assert_eq!(a("-3.2").to_string(), "-3.20");
        for bad in ["", "abc", "4 9", "49,00", "1.23456", "--1", "1e3", "."] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?}");
        }
        assert_eq!(
            Amount::parse_lenient("47,5").map(|x| x.to_string()),
            Ok("47.50".into())
        );
    }

    #[test]
    fn minor_units_follow_the_currency() {
        assert_eq!(
            Amount::from_minor(4900, Some("EUR")),
            Amount::from_units(49)
        );
        assert_eq!(
            Amount::from_minor(5000, Some("jpy")),
            Amount::from_units(5000)
        );
        assert_eq!(Amount::from_minor(1500, Some("KWD")).to_string(), "1.50");
        assert_eq!(Amount::from_minor(1, None).to_string(), "0.01");
    }
}
