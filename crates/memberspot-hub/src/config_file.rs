//! Problems in the hub's TOML files (rules, flows, models), each with its line and column,
//! reported all at once.

use std::fmt;

/// One problem in a file, with where it is (1-based; 0 when the file could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Everything wrong with one file; displayed as `file:line:column: message` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, for messages.
    pub file: String,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// A file-level problem (unreadable file).
    pub fn whole_file(file: &str, message: String) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message,
            }],
        }
    }

    /// A TOML syntax or type error, placed where the parser found it.
    pub fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                line,
                column,
                message: e.message().to_owned(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads a whole file; `what` names it in the error ("the rules file").
pub fn read(path: &std::path::Path, what: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::whole_file(
            &path.display().to_string(),
            format!("cannot read {what}: {e}"),
        )
    })
}

/// `what` and the file it was read from, for messages: "the rules file rules.toml".
pub fn describe(what: &str, file: &str) -> String {
    if file.is_empty() {
        what.to_owned()
    } else {
        format!("{what} {file}")
    }
}

/// Parses `text` as TOML into `T`; a syntax or type error is placed where it is.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::from_toml(file, text, &e))
}

/// A problem at the start of `span` (a TOML value's byte range) in `text`.
pub fn problem_at(text: &str, span: std::ops::Range<usize>, message: String) -> Problem {
    let (line, column) = line_col(text, span.start);
    Problem {
        line,
        column,
        message,
    }
}

/// What checking one file's sections collects: its problems, each placed in the file, and
/// warnings (things that do not stop the hub). Every section is checked, so a file's
/// problems are reported at once.
#[derive(Debug)]
pub struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl<'a> Checker<'a> {
    pub fn new(text: &'a str) -> Checker<'a> {
        Checker {
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A problem at the start of `span` (a TOML value's byte range).
    pub fn problem(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        self.problems
            .push(problem_at(self.text, span, message.into()));
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// The 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    /// The warnings when there are no problems, else every problem in file order.
    pub fn finish(mut self, file: &str) -> Result<Vec<String>, ConfigError> {
        if self.problems.is_empty() {
            return Ok(self.warnings);
        }
        self.problems.sort_by_key(|p| (p.line, p.column));
        Err(ConfigError {
            file: file.to_owned(),
            problems: self.problems,
        })
    }
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("äb\ncd", 3), (1, 3), "columns count characters");
    }
}
