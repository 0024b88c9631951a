//! Which model each persona chats with: `models.toml` in the data directory.
//!
//! ```toml
//! default_model = "gpt"                # optional: for personas without their own entry
//!
//! [models.gpt]                         # any OpenAI-compatible endpoint
//! provider = "openai"
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4.1-mini"
//! api_key_env = "OPENAI_API_KEY"
//!
//! [models.claude]
//! provider = "anthropic"
//! model = "claude-sonnet-4-5"
//! api_key_env = "ANTHROPIC_API_KEY"
//!
//! [models.local]                       # Ollama; no key
//! provider = "openai"
//! base_url = "http://localhost:11434/v1"
//! model = "llama3.1"
//!
//! [personas.support-bot]
//! model = "claude"
//! confirm = ["destructive", "write"]  # tool classes that wait for the human (the default)
//! destructive = "never"                # optional: destructive tools never run in chat
//! max_tool_calls = 8                   # per turn
//! turn_timeout_secs = 120
//! system_prompt = "Answer in German."  # added to the built-in instructions
//! ```
//!
//! Keys live in environment variables (`api_key_env`), never in the file. All problems
//! are reported at once, each with its line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::chat::{ChatLimits, ConfirmClasses, DestructivePolicy};
use crate::model::{ModelConfig, ModelToml};

/// The file name inside the data directory.
pub const FILE_NAME: &str = "models.toml";
/// Upper bound for `max_tool_calls`, so a typo cannot unbound a turn.
pub const MAX_TOOL_CALLS_LIMIT: usize = 64;

pub use memberspot_hub::config_file::{ConfigError, Problem};
use memberspot_hub::config_file::{parse_toml, problem_at};

/// A persona's chat settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersonaChat {
    /// Name of a `[models.NAME]` table; `None` means the file's `default_model`.
    pub model: Option<String>,
    pub limits: ChatLimits,
    /// Added to the built-in instructions.
    pub system_prompt: Option<String>,
}

/// The validated file.
#[derive(Debug, Clone, Default)]
pub struct ModelsConfig {
    /// For messages.
    pub file: String,
    pub default_model: Option<String>,
    pub models: BTreeMap<String, ModelConfig>,
    pub personas: BTreeMap<String, PersonaChat>,
    /// Problems that do not stop loading (an unset key variable).
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    default_model: Option<Spanned<String>>,
    #[serde(default)]
    models: BTreeMap<String, Spanned<ModelToml>>,
    #[serde(default)]
    personas: BTreeMap<String, Spanned<RawPersona>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPersona {
    #[serde(default)]
    model: Option<Spanned<String>>,
    #[serde(default)]
    destructive: Option<Spanned<String>>,
    #[serde(default)]
    confirm: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    max_tool_calls: Option<Spanned<i64>>,
    #[serde(default)]
    turn_timeout_secs: Option<Spanned<f64>>,
    #[serde(default)]
    system_prompt: Option<String>,
}

impl ModelsConfig {
    /// `<data dir>/models.toml`.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Reads and validates a models file.
    pub fn load(path: &Path) -> Result<ModelsConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::whole_file(&file, format!(
                    "cannot read the models file ({e}); it needs a [models.NAME] table with provider and model, \
                     and [personas.NAME] model = \"NAME\" (or default_model = \"NAME\")"
                )))?;
        Self::parse(&text, &file)
    }

    /// Parses and validates models text.
    pub fn parse(text: &str, file: &str) -> Result<ModelsConfig, ConfigError> {
        let at = |span, message| problem_at(text, span, message);
        let raw: RawFile = parse_toml(file, text)?;
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut models = BTreeMap::new();
        for (name, spanned) in &raw.models {
            if !valid_name(name) {
                problems.push(at(
                    spanned.span(),
                    format!("model name `{name}` must be 1-64 letters, digits, `-`, `_` or `.`"),
                ));
            }
            match spanned.get_ref().resolve(&mut warnings) {
                Ok(c) => {
                    models.insert(name.clone(), c);
                }
                Err(list) => problems.extend(
                    list.into_iter()
                        .map(|(span, m)| at(span, format!("model `{name}`: {m}"))),
                ),
            }
        }
        let known = |n: &str| raw.models.contains_key(n);
        let known_list = || {
            if raw.models.is_empty() {
                " (no [models.NAME] table is defined)".to_string()
            } else {
                format!(
                    "; defined models: {}",
                    raw.models.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        };
        let default_model = raw.default_model.as_ref().map(|d| {
            if !known(d.get_ref()) {
                problems.push(at(
                    d.span(),
                    format!(
                        "default_model: unknown model `{}`{}",
                        d.get_ref(),
                        known_list()
                    ),
                ));
            }
            d.get_ref().clone()
        });
        let mut personas = BTreeMap::new();
        for (name, spanned) in &raw.personas {
            let p = spanned.get_ref();
            let mut limits = ChatLimits::default();
            if let Some(m) = &p.model
                && !known(m.get_ref())
            {
                problems.push(at(
                    m.span(),
                    format!(
                        "persona `{name}`: unknown model `{}`{}",
                        m.get_ref(),
                        known_list()
                    ),
                ));
            }
            if let Some(d) = &p.destructive {
                match DestructivePolicy::parse(d.get_ref()) {
                    Some(v) => limits.destructive = v,
                    None => problems.push(at(
                        d.span(),
                        format!(
                            "persona `{name}`: `destructive` must be \"confirm\" or \"never\", not `{}`",
                            d.get_ref()
                        ),
                    )),
                }
            }
            if let Some(c) = &p.confirm {
                match ConfirmClasses::parse(c.get_ref()) {
                    Ok(v) => {
                        limits.confirm = v;
                        // The old spelling may stay, but must not contradict the new one.
                        if !v.destructive
                            && p.destructive.as_ref().is_some_and(|d| {
                                DestructivePolicy::parse(d.get_ref())
                                    == Some(DestructivePolicy::Confirm)
                            })
                        {
                            problems.push(at(
                                c.span(),
                                format!(
                                    "persona `{name}`: `destructive = \"confirm\"` asks before destructive tools but `confirm` leaves them out; drop `destructive` and list the classes in `confirm`"
                                ),
                            ));
                        }
                    }
                    Err(m) => {
                        problems.push(at(c.span(), format!("persona `{name}`: `confirm`: {m}")))
                    }
                }
            }
            if let Some(n) = &p.max_tool_calls {
                match usize::try_from(*n.get_ref()) {
                    Ok(v) if (1..=MAX_TOOL_CALLS_LIMIT).contains(&v) => {
                        limits.max_tool_calls_per_turn = v
                    }
                    _ => problems.push(at(
                        n.span(),
                        format!(
                            "persona `{name}`: `max_tool_calls` must be 1 to {MAX_TOOL_CALLS_LIMIT}"
                        ),
                    )),
                }
            }
            if let Some(t) = &p.turn_timeout_secs {
                let v = *t.get_ref();
                if v > 0.0 && v.is_finite() {
                    limits.turn_timeout = Duration::from_secs_f64(v);
                } else {
                    problems.push(at(
                        t.span(),
                        format!("persona `{name}`: `turn_timeout_secs` must be more than 0"),
                    ));
                }
            }
            if p.model.is_none() && default_model.is_none() {
                warnings.push(format!(
                    "persona `{name}` names no model and there is no default_model; it cannot chat"
                ));
            }
            personas.insert(
                name.clone(),
                PersonaChat {
                    model: p.model.as_ref().map(|m| m.get_ref().clone()),
                    limits,
                    system_prompt: p.system_prompt.clone().filter(|s| !s.trim().is_empty()),
                },
            );
        }
        if !problems.is_empty() {
            return Err(ConfigError {
                file: file.to_owned(),
                problems,
            });
        }
        Ok(ModelsConfig {
            file: file.to_owned(),
            default_model,
            models,
            personas,
            warnings,
        })
    }

    /// The model and settings a persona chats with. `model_override` (e.g. the CLI's
    /// `--model`) wins over the persona's entry, which wins over `default_model`.
    pub fn for_persona(
        &self,
        persona: &str,
        model_override: Option<&str>,
    ) -> Result<(ModelConfig, PersonaChat), String> {
        self.for_persona_named(persona, model_override)
            .map(|(_, model, settings)| (model, settings))
    }

    /// As [`ModelsConfig::for_persona`], with the model's name in the file.
    pub fn for_persona_named(
        &self,
        persona: &str,
        model_override: Option<&str>,
    ) -> Result<(String, ModelConfig, PersonaChat), String> {
        let settings = self.personas.get(persona).cloned().unwrap_or_default();
        let name = model_override
            .map(str::to_string)
            .or_else(|| settings.model.clone())
            .or_else(|| self.default_model.clone())
            .ok_or_else(|| {
                format!(
                    "persona `{persona}` has no chat model: add [personas.{persona}] model = \"NAME\" \
                     (or default_model = \"NAME\") to {}",
                    self.file
                )
            })?;
        let model = self.models.get(&name).cloned().ok_or_else(|| {
            format!(
                "no model named `{name}` in {}; defined: {}",
                self.file,
                if self.models.is_empty() {
                    "none".to_string()
                } else {
                    self.models.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )
        })?;
        Ok((name, model, settings))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProviderKind;

    const GOOD: &str = r#"
default_model = "local"

[models.local]
provider = "openai"
base_url = "http://localhost:11434/v1"
model = "llama3.1"

[models.claude]
provider = "anthropic"
model = "claude-sonnet-4-5"
api_key_env = "MEMBERSPOT_AGENT_TEST_UNSET_KEY"
timeout_secs = 30

[personas.support-bot]
model = "claude"
destructive = "never"
max_tool_calls = 3
turn_timeout_secs = 20
"#;

    #[test]
    fn parses_models_and_personas() {
        let c = ModelsConfig::parse(GOOD, "models.toml").expect("valid");
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models["claude"].provider, ProviderKind::Anthropic);
        assert_eq!(c.models["claude"].timeout, Duration::from_secs(30));
        assert!(c.models["claude"].api_key.is_none());
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("MEMBERSPOT_AGENT_TEST_UNSET_KEY")),
            "{:?}",
            c.warnings
        );
        let p = &c.personas["support-bot"];
        assert_eq!(p.limits.destructive, DestructivePolicy::Never);
        assert_eq!(p.limits.max_tool_calls_per_turn, 3);
        assert_eq!(p.limits.turn_timeout, Duration::from_secs(20));

        let (m, _) = c.for_persona("support-bot", None).expect("model");
        assert_eq!(m.model, "claude-sonnet-4-5");
        let (m, s) = c.for_persona("other", None).expect("default");
        assert_eq!(m.model, "llama3.1");
        assert_eq!(s.limits, ChatLimits::default());
        let (m, _) = c
            .for_persona("support-bot", Some("local"))
            .expect("override");
        assert_eq!(m.model, "llama3.1");
        let err = c.for_persona("x", Some("nope")).expect_err("unknown");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn every_problem_has_its_line() {
        let text = r#"
[models.a]
provider = "gemini"
model = ""

[models.b]
provider = "openai"
model = "x"
base_url = "localhost:1234"
timeout_secs = 0

[personas.bot]
model = "c"
destructive = "sometimes"
max_tool_calls = 0
"#;
        let err = ModelsConfig::parse(text, "models.toml").expect_err("invalid");
        let lines: Vec<(usize, &str)> = err
            .problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        let has =
            |line: usize, needle: &str| lines.iter().any(|(l, m)| *l == line && m.contains(needle));
        assert!(has(3, "unknown provider `gemini`"), "{lines:?}");
        assert!(has(4, "`model` must not be empty"), "{lines:?}");
        assert!(has(9, "http(s) URL"), "{lines:?}");
        assert!(has(10, "timeout_secs"), "{lines:?}");
        assert!(has(13, "unknown model `c`"), "{lines:?}");
        assert!(has(14, "\"confirm\" or \"never\""), "{lines:?}");
        assert!(has(15, "max_tool_calls"), "{lines:?}");
        assert!(err.to_string().starts_with("models.toml:3:"), "{err}");
    }

    #[test]
    fn confirm_lists_tool_classes_and_defaults_to_write_and_destructive() {
        let text = r#"
[models.m]
provider = "openai"
base_url = "http://localhost:1/v1"
model = "x"

[personas.default]
model = "m"

[personas.writer]
model = "m"
confirm = ["destructive"]

[personas.old]
model = "m"
destructive = "never"

[personas.bad]
model = "m"
confirm = ["writes"]

[personas.contradiction]
model = "m"
destructive = "confirm"
confirm = ["write"]
"#;
        let err = ModelsConfig::parse(text, "models.toml").expect_err("two problems");
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.problems[0]
                .message
                .contains("`writes` is not a tool class"),
            "{err}"
        );
        assert_eq!(err.problems[0].line, 20, "{err}");
        assert!(err.problems[1].message.contains("leaves them out"), "{err}");
        let ok: String = text.lines().take(16).collect::<Vec<_>>().join("\n");
        let c = ModelsConfig::parse(&ok, "models.toml").expect("valid");
        assert_eq!(
            c.personas["default"].limits.confirm,
            ConfirmClasses::default()
        );
        assert!(c.personas["default"].limits.confirm.write);
        assert!(c.personas["default"].limits.confirm.destructive);
        let w = c.personas["writer"].limits.confirm;
        assert!(w.destructive && !w.write && !w.read);
        let old = &c.personas["old"].limits;
        assert_eq!(
            old.destructive,
            DestructivePolicy::Never,
            "the old setting keeps working"
        );
        assert!(old.confirm.write, "and writes are still confirmed");
    }

    #[test]
    fn a_key_never_goes_over_plain_http_to_another_machine() {
        let text = |url: &str, key: bool| {
            format!(
                "[models.m]\nprovider = \"openai\"\nmodel = \"x\"\nbase_url = \"{url}\"\n{}",
                if key {
                    "api_key_env = \"MEMBERSPOT_AGENT_TEST_KEY_X\"\n"
                } else {
                    ""
                }
            )
        };
        let err = ModelsConfig::parse(&text("http://llm.example.com/v1", true), "m.toml")
            .expect_err("plain http to another host with a key");
        assert!(err.to_string().contains("m.toml:4:"), "{err}");
        assert!(err.to_string().contains("unencrypted"), "{err}");
        for ok in [
            text("http://localhost:11434/v1", true),
            text("http://127.0.0.1:8080/v1", true),
            text("https://llm.example.com/v1", true),
            // No key, no headers: a model server in the LAN without authentication.
            text("http://10.0.0.5:11434/v1", false),
        ] {
            ModelsConfig::parse(&ok, "m.toml").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn unknown_keys_and_syntax_errors_point_at_the_line() {
        let err = ModelsConfig::parse("[models.a]\nprovider = \"openai\"\nmodle = \"x\"\n", "f")
            .expect_err("typo");
        assert_eq!(err.problems[0].line, 3, "{err}");
        let err = ModelsConfig::parse("default_model = \"x\"\n", "f").expect_err("unknown");
        assert!(err.to_string().contains("no [models.NAME] table"), "{err}");
    }
}
