//! Numbers and money as the console's language writes them: `1,234.50` and `€1,234.50`
//! in English, `1.234,50` and `1.234,50 €` in German. Amounts arrive in minor units (cents)
//! with an ISO 4217 currency code, as the payment providers send them.

use crate::i18n::Lang;

/// A whole number with the language's thousands separator.
pub fn number(lang: Lang, n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", group(lang, n.unsigned_abs()))
}

/// An amount of `minor` units of `currency`, with the currency's own number of decimals.
pub fn money(lang: Lang, minor: i64, currency: &str) -> String {
    let code = currency.trim().to_ascii_uppercase();
    let decimals = minor_digits(&code);
    let scale = 10u64.pow(decimals);
    let abs = minor.unsigned_abs();
    let (whole, fraction) = (abs / scale, abs % scale);
    let decimal_mark = match lang {
        Lang::En => '.',
        Lang::De => ',',
    };
    let mut amount = group(lang, whole);
    if decimals > 0 {
        amount.push(decimal_mark);
        amount.push_str(&format!("{fraction:0width$}", width = decimals as usize));
    }
    let sign = if minor < 0 { "-" } else { "" };
    let symbol = symbol(&code);
    match (lang, symbol) {
        (Lang::En, Some(s)) => format!("{sign}{s}{amount}"),
        (Lang::En, None) => format!("{sign}{code} {amount}"),
        (Lang::De, s) => format!("{sign}{amount} {}", s.unwrap_or(&code)),
    }
}

/// A decimal number (a rate limit) with up to three decimals and the language's decimal
/// mark, not grouped, so that it reads back as typed (`0,5` in German, `0.5` in English).
pub fn decimal(lang: Lang, x: f64) -> String {
    let text = format!("{x:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match lang {
        Lang::En => text.to_owned(),
        Lang::De => text.replace('.', ","),
    }
}

fn group(lang: Lang, n: u64) -> String {
    let separator = match lang {
        Lang::En => ',',
        Lang::De => '.',
    };
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(d);
    }
    out
}

fn symbol(code: &str) -> Option<&'static str> {
    match code {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        _ => None,
    }
}

/// ISO 4217's minor units for the currencies that do not use two.
fn minor_digits(code: &str) -> u32 {
    match code {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "HUF" | "XOF" | "XAF" => 0,
        "BHD" | "KWD" | "JOD" | "OMR" | "TND" | "IQD" | "LYD" => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_group_thousands_as_the_language_does() {
        assert_eq!(number(Lang::En, 1_234_567), "1,234,567");
        assert_eq!(number(Lang::De, 1_234_567), "1.234.567");
        assert_eq!(number(Lang::De, 999), "999");
        assert_eq!(number(Lang::En, -1000), "-1,000");
        assert_eq!(number(Lang::En, 0), "0");
    }

    #[test]
    fn decimals_read_back_as_typed() {
        assert_eq!(decimal(Lang::En, 4.0), "4");
        assert_eq!(decimal(Lang::De, 0.5), "0,5");
        assert_eq!(decimal(Lang::En, 1000.25), "1000.25");
        assert_eq!(decimal(Lang::De, 1000.0), "1000");
        assert_eq!(decimal(Lang::En, 0.0), "0");
    }

    #[test]
    fn money_in_each_language() {
        assert_eq!(money(Lang::En, 123_450, "EUR"), "€1,234.50");
        assert_eq!(money(Lang::De, 123_450, "EUR"), "1.234,50 €");
        assert_eq!(money(Lang::De, 4_700, "eur"), "47,00 €");
        assert_eq!(money(Lang::En, -5, "USD"), "-$0.05");
        assert_eq!(money(Lang::De, -5, "USD"), "-0,05 $");
        assert_eq!(money(Lang::En, 990, "CHF"), "CHF 9.90");
        assert_eq!(money(Lang::De, 990, "CHF"), "9,90 CHF");
        assert_eq!(money(Lang::En, 1500, "JPY"), "JPY 1,500");
        assert_eq!(money(Lang::De, 1_234, "KWD"), "1,234 KWD");
        assert_eq!(
            money(Lang::En, i64::MIN, "EUR"),
            "-€92,233,720,368,547,758.08"
        );
    }
}
