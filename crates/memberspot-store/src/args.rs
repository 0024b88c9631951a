//! Positional arguments that never bind a NULL.
//!
//! sqlx's Any driver declares a NULL argument with a different type than a
//! value, and PostgreSQL keeps the parameter types a cached statement was
//! first prepared with: a statement first run with NULL would later reject a
//! value ("incorrect binary data format"). So an absent value is written as
//! the literal `NULL` in the SQL text, and statements with and without a
//! value are different statements.

use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

#[derive(Default)]
pub(crate) struct Args<'a> {
    list: Vec<Arg<'a>>,
}

impl<'a> Args<'a> {
    fn push(&mut self, a: Arg<'a>) -> String {
        self.list.push(a);
        format!("${}", self.list.len())
    }

    pub(crate) fn text(&mut self, v: &'a str) -> String {
        self.push(Arg::Text(v))
    }

    pub(crate) fn int(&mut self, v: i64) -> String {
        self.push(Arg::Int(v))
    }

    pub(crate) fn opt_text(&mut self, v: Option<&'a str>) -> String {
        v.map_or_else(|| "NULL".to_owned(), |v| self.text(v))
    }

    pub(crate) fn opt_int(&mut self, v: Option<i64>) -> String {
        v.map_or_else(|| "NULL".to_owned(), |v| self.int(v))
    }

    pub(crate) fn bind<'q>(
        self,
        mut q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>>
    where
        'a: 'q,
    {
        for a in self.list {
            q = match a {
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
            };
        }
        q
    }
}
