//! Templates (minijinja) over a run's context: `{{ event.email }}`,
//! `{{ steps.find.output.firstname }}`, `{{ item.email | lower }}`.
//!
//! A value that is exactly one `{{ expression }}` keeps the expression's type (a list stays a
//! list, a number a number), so tool arguments and loops get real JSON, not text.

use minijinja::{Environment, UndefinedBehavior, Value as Jinja};
use serde_json::Value;

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// It does not parse.
    #[error("{0}")]
    Syntax(String),
    /// Rendering failed: a variable that is not there (`steps.fnid`), a filter on the
    /// wrong type.
    #[error("{0}")]
    Render(String),
    /// An expression evaluated to nothing.
    #[error("`{0}` is undefined")]
    Undefined(String),
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    // A typo (`steps.fnid`) is an error, not an empty string sent to a customer.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Checks that a template parses.
pub fn check(template: &str) -> Result<(), TemplateError> {
    let env = env();
    match sole_expression(template) {
        Some(expr) => env.compile_expression(expr).map(|_| ()).map_err(syntax),
        None => env.template_from_str(template).map(|_| ()).map_err(syntax),
    }
}

/// The variables a template (or a sole `{{ expr }}`) reads, dotted as far as plain
/// attribute access goes (`steps.two.output`): for checking references before a run.
pub fn variables(template: &str) -> Result<std::collections::BTreeSet<String>, TemplateError> {
    let env = env();
    let found = match sole_expression(template) {
        Some(expr) => env
            .compile_expression(expr)
            .map_err(syntax)?
            .undeclared_variables(true),
        None => env
            .template_from_str(template)
            .map_err(syntax)?
            .undeclared_variables(true),
    };
    Ok(found.into_iter().collect())
}

/// Renders a template to text.
pub fn render(template: &str, ctx: &Value) -> Result<String, TemplateError> {
    let env = env();
    let t = env.template_from_str(template).map_err(syntax)?;
    t.render(Jinja::from_serialize(ctx))
        .map_err(|e| TemplateError::Render(describe(e)))
}

/// Evaluates an expression (`steps.list.output.items`) to JSON.
pub fn eval(expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
    let env = env();
    let e = env.compile_expression(expr.trim()).map_err(syntax)?;
    let v = e
        .eval(Jinja::from_serialize(ctx))
        .map_err(|e| TemplateError::Render(describe(e)))?;
    // An expression yields `undefined` instead of failing; strict means it fails here.
    if v.is_undefined() {
        return Err(TemplateError::Undefined(expr.trim().to_owned()));
    }
    serde_json::to_value(&v).map_err(|e| TemplateError::Render(e.to_string()))
}

/// Renders every string inside a TOML value; a string that is one `{{ expr }}` keeps the
/// expression's JSON type.
pub fn render_value(v: &toml::Value, ctx: &Value) -> Result<Value, TemplateError> {
    Ok(match v {
        toml::Value::String(s) => match sole_expression(s) {
            Some(expr) => eval(expr, ctx)?,
            None => Value::String(render(s, ctx)?),
        },
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
    })
}

/// `"{{ a.b }}"` → `Some("a.b")`; anything else → `None`.
fn sole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim())
}

fn syntax(e: minijinja::Error) -> TemplateError {
    TemplateError::Syntax(describe(e))
}

fn describe(e: minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(detail) = e.detail()
        && !s.contains(detail)
    {
        s.push_str(&format!(" ({detail})"));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_and_keeps_types() {
        let ctx =
            json!({"event": {"email": "A@B.de"}, "steps": {"list": {"output": {"items": [1, 2]}}}});
        assert_eq!(
            render("Hi {{ event.email | lower }}", &ctx).unwrap(),
            "Hi a@b.de"
        );
        let v: toml::Value = toml::from_str("a = \"{{ steps.list.output.items }}\"\nb = \"n={{ steps.list.output.items | length }}\"").unwrap();
        assert_eq!(
            render_value(&v, &ctx).unwrap(),
            json!({"a": [1, 2], "b": "n=2"})
        );
        assert_eq!(
            eval("steps.list.output.items", &ctx).unwrap(),
            json!([1, 2])
        );
    }

    #[test]
    fn typos_are_errors() {
        let ctx = json!({"event": {}});
        assert!(matches!(
            render("{{ event.emial }}", &ctx),
            Err(TemplateError::Render(_))
        ));
        assert!(matches!(
            check("{{ event.email "),
            Err(TemplateError::Syntax(_))
        ));
        assert!(matches!(
            check("{% for x in y %}"),
            Err(TemplateError::Syntax(_))
        ));
        // A value that is one expression keeps its type, and is strict too.
        let args: toml::Value = toml::from_str("email = \"{{ input.email }}\"").unwrap();
        let err = render_value(&args, &json!({"input": {}})).unwrap_err();
        assert_eq!(err, TemplateError::Undefined("input.email".into()));
        let v: toml::Value = toml::from_str("t = \"{{ input.token | default('') }}\"").unwrap();
        assert_eq!(
            render_value(&v, &json!({"input": {}})).unwrap(),
            json!({"t": ""})
        );
    }
}
