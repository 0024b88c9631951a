//! One message catalogue per language (Fluent, `i18n/*.ftl`, compiled in) and the choice
//! of language: the `msh_lang` cookie, else `Accept-Language`, else English.

use std::collections::HashMap;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use fluent_langneg::{NegotiationStrategy, negotiate_languages};
use unic_langid::LanguageIdentifier;

/// The languages of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    En,
    De,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::De];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.code() == code)
    }

    /// The other language, for the switch.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::De,
            Lang::De => Lang::En,
        }
    }

    fn source(self) -> &'static str {
        match self {
            Lang::En => include_str!("../i18n/en.ftl"),
            Lang::De => include_str!("../i18n/de.ftl"),
        }
    }

    /// The best of ours for an `Accept-Language` header.
    pub fn negotiate(accept_language: &str) -> Lang {
        let requested = fluent_langneg::accepted_languages::parse(accept_language);
        let available: Vec<LanguageIdentifier> = Lang::ALL
            .iter()
            .filter_map(|l| l.code().parse().ok())
            .collect();
        let chosen = negotiate_languages(
            &requested,
            &available,
            available.first(),
            NegotiationStrategy::Lookup,
        );
        chosen
            .first()
            .and_then(|l| Lang::parse(l.language.as_str()))
            .unwrap_or(Lang::En)
    }
}

/// A whole-number argument with the language's thousands separator; anything else (and
/// numbers with fraction digits) as Fluent writes it.
fn grouped(lang: Lang, v: &FluentValue<'_>) -> Option<String> {
    match v {
        FluentValue::Number(n)
            if n.value.fract() == 0.0
                && n.value.abs() < 1e15
                && n.options.minimum_fraction_digits.unwrap_or(0) == 0 =>
        {
            Some(crate::format::number(lang, n.value as i64))
        }
        _ => None,
    }
}

fn grouped_en<M>(v: &FluentValue<'_>, _: &M) -> Option<String> {
    grouped(Lang::En, v)
}

fn grouped_de<M>(v: &FluentValue<'_>, _: &M) -> Option<String> {
    grouped(Lang::De, v)
}

/// The compiled catalogues.
pub struct I18n {
    bundles: HashMap<Lang, FluentBundle<FluentResource>>,
}

impl I18n {
    /// Parses the embedded catalogues. They are part of the binary and checked by tests, so
    /// an error here is a build mistake; it is reported, not hidden.
    pub fn load() -> anyhow::Result<I18n> {
        let mut bundles = HashMap::new();
        for lang in Lang::ALL {
            let resource = FluentResource::try_new(lang.source().to_owned())
                .map_err(|(_, e)| anyhow::anyhow!("i18n/{}.ftl: {e:?}", lang.code()))?;
            let id: LanguageIdentifier = lang.code().parse()?;
            let mut bundle = FluentBundle::new_concurrent(vec![id]);
            // Plain text into HTML: no Unicode isolation marks around arguments.
            bundle.set_use_isolating(false);
            // Whole numbers grouped as the language writes them (`1,234`, `1.234`).
            bundle.set_formatter(Some(match lang {
                Lang::En => grouped_en,
                Lang::De => grouped_de,
            }));
            bundle
                .add_resource(resource)
                .map_err(|e| anyhow::anyhow!("i18n/{}.ftl: {e:?}", lang.code()))?;
            bundles.insert(lang, bundle);
        }
        Ok(I18n { bundles })
    }

    /// The message `id` in `lang` with `args`; the id itself if it is missing (a test
    /// keeps both catalogues complete).
    pub fn text(&self, lang: Lang, id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        self.lookup(lang, id, args).unwrap_or_else(|| id.to_owned())
    }

    /// The message `id` in `lang` with `args`, if the catalogue has it.
    pub fn lookup(&self, lang: Lang, id: &str, args: &[(&str, FluentValue<'_>)]) -> Option<String> {
        let bundle = self.bundles.get(&lang)?;
        let pattern = bundle.get_message(id).and_then(|m| m.value())?;
        let mut fargs = FluentArgs::new();
        for (k, v) in args {
            fargs.set(*k, v.clone());
        }
        let mut errors = Vec::new();
        let out = bundle.format_pattern(pattern, (!args.is_empty()).then_some(&fargs), &mut errors);
        Some(out.into_owned())
    }

    /// The message ids of `lang`'s catalogue.
    pub fn ids(lang: Lang) -> Vec<String> {
        let Ok(resource) = FluentResource::try_new(lang.source().to_owned()) else {
            return Vec::new();
        };
        resource
            .entries()
            .filter_map(|e| match e {
                fluent_syntax::ast::Entry::Message(m) => Some(m.id.name.to_owned()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_parse_and_have_the_same_ids() {
        I18n::load().expect("catalogues parse");
        let mut en = I18n::ids(Lang::En);
        let mut de = I18n::ids(Lang::De);
        assert!(en.len() > 50, "{}", en.len());
        en.sort();
        de.sort();
        assert_eq!(en, de);
    }

    /// Every id the pages name literally (`t("…")`, `ta("…"`, `text(lang, "…"`) is in the
    /// catalogue: a missing one would show its id on the page.
    #[test]
    fn every_literal_id_the_pages_use_exists() {
        let sources = [
            include_str!("audit.rs"),
            include_str!("auth.rs"),
            include_str!("chat.rs"),
            include_str!("connections.rs"),
            include_str!("events.rs"),
            include_str!("flows.rs"),
            include_str!("layout.rs"),
            include_str!("members.rs"),
            include_str!("oauth.rs"),
            include_str!("overview.rs"),
            include_str!("personas.rs"),
            include_str!("settings.rs"),
        ];
        let known = I18n::ids(Lang::En);
        let mut missing = Vec::new();
        for source in sources {
            // One space for any run of white space: a call rustfmt split over lines
            // (`text(\n    s.lang,\n    "id",`) reads as one.
            let text = source.split_whitespace().collect::<Vec<_>>().join(" ");
            let text = text.as_str();
            for opener in [
                "t(\"",
                "ta(\"",
                "s.lang, \"",
                "v.lang, \"",
                "text(lang, \"",
                "text( lang, \"",
            ] {
                for (at, _) in text.match_indices(opener) {
                    let rest = &text[at + opener.len()..];
                    let id = &rest[..rest.find('"').unwrap_or(0)];
                    // `.t("` and `.ta("`, not the end of another name (`get("`).
                    let named = text[..at]
                        .chars()
                        .last()
                        .is_some_and(|c| !c.is_alphanumeric() && c != '_');
                    let literal = named
                        && !id.is_empty()
                        && id
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    if literal && !known.iter().any(|k| k == id) {
                        missing.push(id.to_owned());
                    }
                }
            }
        }
        // Ids the pages put together: a persona's confirmation pages.
        for action in ["revoke", "rotate"] {
            for part in ["title", "explain", "confirm"] {
                let id = format!("personas-{action}-{part}");
                if !known.contains(&id) {
                    missing.push(id);
                }
            }
        }
        assert!(missing.is_empty(), "ids without a message: {missing:?}");
    }

    /// Every value of every stored word the pages show through `View::label` has its
    /// message in both languages: a missing one would show the raw word.
    #[test]
    fn every_stored_word_has_a_label_in_both_languages() {
        use memberspot_hub::store::{AuditOutcome, EventStatus, RunStatus, Surface, Verification};
        let mut ids: Vec<String> = Vec::new();
        ids.extend(
            AuditOutcome::ALL
                .iter()
                .map(|v| format!("outcome-{}", v.as_str())),
        );
        ids.extend(
            Surface::ALL
                .iter()
                .map(|v| format!("surface-{}", v.as_str())),
        );
        ids.extend(
            EventStatus::ALL
                .iter()
                .map(|v| format!("event-status-{}", v.as_str())),
        );
        ids.extend(
            RunStatus::ALL
                .iter()
                .map(|v| format!("run-status-{}", v.as_str())),
        );
        ids.extend(
            Verification::ALL
                .iter()
                .map(|v| format!("verification-{}", v.as_str())),
        );
        // A chat call's outcome (no `ALL`: the match fails to compile on a new variant).
        use memberspot_agent::CallStatus;
        for status in [
            CallStatus::Ok,
            CallStatus::ToolError,
            CallStatus::Invalid,
            CallStatus::OutOfScope,
            CallStatus::Denied,
            CallStatus::Declined,
            CallStatus::DestructiveDisabled,
            CallStatus::LimitReached,
        ] {
            match status {
                CallStatus::Ok
                | CallStatus::ToolError
                | CallStatus::Invalid
                | CallStatus::OutOfScope
                | CallStatus::Denied
                | CallStatus::Declined
                | CallStatus::DestructiveDisabled
                | CallStatus::LimitReached => {}
            }
            let word = serde_json::to_value(status).unwrap_or_default();
            ids.push(format!("call-status-{}", word.as_str().unwrap_or_default()));
        }
        // The tools' titles in the persona form.
        ids.extend(
            memberspot_tools::Catalogue::standard()
                .descriptors()
                .map(|d| format!("tool-title-{}", d.name)),
        );
        for lang in Lang::ALL {
            let known = I18n::ids(lang);
            let missing: Vec<&String> = ids.iter().filter(|id| !known.contains(id)).collect();
            assert!(
                missing.is_empty(),
                "{}: no message for {missing:?}",
                lang.code()
            );
        }
        // The lookup the pages use: German words, English keeps the stored word.
        let i = I18n::load().expect("catalogues parse");
        let de = i.lookup(Lang::De, "outcome-denied", &[]);
        assert_eq!(de.as_deref(), Some("abgelehnt"));
        let en = i.lookup(Lang::En, "event-status-refused_amount", &[]);
        assert_eq!(en.as_deref(), Some("refused_amount"));
        assert_eq!(i.lookup(Lang::De, "outcome-nonsense", &[]), None);
    }

    /// The field errors keep the field's name first in both languages, and English reads
    /// as it did before the messages moved to the catalogue.
    #[test]
    fn field_errors_name_the_field_first() {
        let i = I18n::load().expect("catalogues parse");
        let args = |field: &'static str, value: &'static str| {
            [("field", FluentValue::from(field)), ("value", value.into())]
        };
        assert_eq!(
            i.text(Lang::En, "error-not-date-time", &args("since", "yesterday")),
            "since: `yesterday` is not a date and time (2026-12-04T10:30)"
        );
        let choices = [
            ("field", FluentValue::from("outcome")),
            ("choices", "ok, denied".into()),
        ];
        assert_eq!(
            i.text(Lang::En, "error-use-choices", &choices),
            "outcome: use ok, denied"
        );
        for lang in Lang::ALL {
            for id in [
                "error-not-date-time",
                "error-not-in-time-zone",
                "error-not-a-date",
            ] {
                let text = i.text(lang, id, &args("until", "x"));
                assert!(text.starts_with("until: `x`"), "{id}: {text}");
            }
            assert!(
                i.text(lang, "error-use-choices", &choices)
                    .starts_with("outcome: ")
            );
        }
    }

    /// The German pages speak to the reader one way, with "du" (as the platform does),
    /// never with the formal "Sie". Inside a sentence a capitalised "Sie"/"Ihr…" is formal;
    /// at a sentence's start it may mean "they"/"its", so there only the forms that cannot
    /// are slips: "Ihnen", and a verb followed by "Sie" ("Geben Sie", "können Sie").
    #[test]
    fn german_says_du_throughout() {
        let formal = [
            "Sie", "Ihnen", "Ihr", "Ihre", "Ihren", "Ihrem", "Ihrer", "Ihres",
        ];
        let is_verb_before_sie = |w: &str| {
            let w = w.trim_matches(|c: char| !c.is_alphabetic());
            w.ends_with("en") || w.ends_with("ern") || w.ends_with("eln")
        };
        let mut slips = Vec::new();
        for line in Lang::De.source().lines() {
            let text = line.split_once(" = ").map_or(line, |(_, t)| t);
            let words: Vec<&str> = text.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                let word = w.trim_matches(|c: char| !c.is_alphabetic());
                let starts_sentence = i == 0 || words[i - 1].ends_with(['.', ':', '!', '?', ';']);
                let slip = (formal.contains(&word) && !starts_sentence)
                    || word == "Ihnen"
                    || (word == "Sie" && i > 0 && is_verb_before_sie(words[i - 1]));
                if slip {
                    slips.push(line.to_owned());
                }
            }
        }
        assert!(slips.is_empty(), "formal address in de.ftl: {slips:#?}");
    }

    #[test]
    fn accept_language_picks_german_or_english() {
        assert_eq!(Lang::negotiate("de-DE,de;q=0.9,en;q=0.8"), Lang::De);
        assert_eq!(Lang::negotiate("en-US,en;q=0.9"), Lang::En);
        assert_eq!(Lang::negotiate("fr-FR, de;q=0.5"), Lang::De);
        assert_eq!(Lang::negotiate("fr"), Lang::En);
        assert_eq!(Lang::negotiate(""), Lang::En);
    }

    #[test]
    fn whole_numbers_are_grouped_as_the_language_writes_them() {
        let i = I18n::load().expect("catalogues parse");
        let args = |n: i64| [("records", n.into()), ("head", "7:abc".into())];
        let en = i.text(Lang::En, "audit-verify-ok", &args(1_234_567));
        let de = i.text(Lang::De, "audit-verify-ok", &args(1_234_567));
        assert!(en.contains("1,234,567"), "{en}");
        assert!(de.contains("1.234.567"), "{de}");
        // Plural selection still sees the number.
        let one = [("count", 1.into()), ("source", "ds24".into())];
        let one = i.text(Lang::En, "overview-refused-deliveries", &one);
        assert!(one.starts_with("One refused delivery"), "{one}");
    }

    #[test]
    fn arguments_are_filled_in() {
        let i = I18n::load().expect("catalogues parse");
        let s = i.text(
            Lang::De,
            "nav-signed-in",
            &[("name", "anna".into()), ("role", "Inhaber".into())],
        );
        assert_eq!(s, "Angemeldet als anna (Inhaber)");
    }
}
