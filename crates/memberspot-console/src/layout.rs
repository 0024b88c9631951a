//! The frame of every page (header, navigation, one `h1`, the main content) and small
//! shared pieces: notices, badges, empty states, times.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::TimeZone;
use fluent_bundle::FluentValue;
use maud::{DOCTYPE, Markup, html};

use crate::Console;
use crate::i18n::Lang;
use crate::session::Signed;

/// What a page is rendered for: the language and, once signed in, the user.
pub struct View<'a> {
    pub console: &'a Console,
    pub lang: Lang,
    pub user: Option<&'a Signed>,
    /// The page's section (for the navigation), and where the language switch comes back
    /// to when the page has no address of its own (a form's answer).
    pub path: &'a str,
}

impl<'a> View<'a> {
    pub fn signed(console: &'a Console, s: &'a Signed, path: &'a str) -> View<'a> {
        View {
            console,
            lang: s.lang,
            user: Some(s),
            path,
        }
    }

    pub fn t(&self, id: &str) -> String {
        self.console.i18n.text(self.lang, id, &[])
    }

    pub fn ta(&self, id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        self.console.i18n.text(self.lang, id, args)
    }

    /// A stored word (an outcome, a status, a surface) as the language says it: the
    /// message `{kind}-{value}` (`outcome-denied`, `surface-mcp-http`), else the word itself.
    /// Links and form values keep the word; only what is read changes.
    pub fn label(&self, kind: &str, value: &str) -> String {
        self.console
            .i18n
            .lookup(self.lang, &format!("{kind}-{value}"), &[])
            .unwrap_or_else(|| value.to_owned())
    }

    /// A decimal number as the language writes it (see [`crate::format::decimal`]).
    pub fn decimal(&self, x: f64) -> String {
        crate::format::decimal(self.lang, x)
    }

    /// A duration in milliseconds with its unit (`12 ms`).
    pub fn ms(&self, ms: impl std::fmt::Display) -> String {
        self.ta("duration-ms", &[("ms", ms.to_string().into())])
    }

    /// An epoch-milliseconds time in the console's time zone, as the language writes it.
    pub fn when(&self, ms: i64) -> String {
        let tz = self.console.settings.time_zone;
        let Some(t) = tz.timestamp_millis_opt(ms).single() else {
            return ms.to_string();
        };
        match self.lang {
            Lang::De => t.format("%d.%m.%Y %H:%M:%S").to_string(),
            Lang::En => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        }
    }

    /// The page: `title` is also its one `h1`.
    pub fn page(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        let nav = [
            ("/", "nav-overview"),
            ("/members", "nav-members"),
            ("/personas", "nav-personas"),
            ("/connections", "nav-connections"),
            ("/events", "nav-events"),
            ("/flows", "nav-flows"),
            ("/chat", "nav-chat"),
            ("/oauth", "nav-apps"),
            ("/audit", "nav-audit"),
            ("/settings", "nav-settings"),
        ];
        let markup = html! {
            (DOCTYPE)
            html lang=(self.lang.code()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · " (self.t("product")) }
                    link rel="stylesheet" href="/assets/console.css";
                    script src="/assets/console.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/" { (self.t("product")) }
                        @if let Some(u) = self.user {
                            nav aria-label=(self.t("nav-label")) {
                                @for (href, id) in nav {
                                    // Chat is for owners only (it changes the school).
                                    @if href == "/chat" && !u.is_owner() { } @else {
                                    @let current = self.path == href
                                        || (href != "/" && self.path.starts_with(href));
                                    a href=(href) aria-current=[current.then_some("page")] { (self.t(id)) }
                                    }
                                }
                            }
                            div.who {
                                span {
                                    (self.ta("nav-signed-in", &[
                                        ("name", u.name.clone().into()),
                                        ("role", self.t(&format!("role-{}", u.role)).into()),
                                    ]))
                                }
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(u.csrf);
                                    button.link type="submit" { (self.t("nav-logout")) }
                                }
                                form method="post" action="/logout-everywhere" {
                                    input type="hidden" name="csrf" value=(u.csrf);
                                    button.link type="submit" { (self.t("nav-logout-everywhere")) }
                                }
                            }
                        }
                        @let back = self.user.map(|u| u.here.as_str()).filter(|h| !h.is_empty()).unwrap_or(self.path);
                        a.lang href={ "/lang?to=" (self.lang.other().code()) "&back=" (urlencode(back)) }
                            hreflang=(self.lang.other().code()) { (self.t("lang-switch")) }
                    }
                    main {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        };
        (status, markup).into_response()
    }

    /// A refusal or error page with a message and a way back.
    pub fn message(&self, status: StatusCode, title_id: &str, text: &str) -> Response {
        self.page(
            status,
            &self.t(title_id),
            html! {
                p.notice.failed role="alert" { (text) }
                p { a href="/" { (self.t("back")) } }
            },
        )
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A notice: `ok`, `warning` or `failed`.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={ "notice " (kind) } role=[(kind == "failed").then_some("alert")] { (text) } }
}

/// An empty state: what is missing and what to do next.
pub fn empty(text: &str) -> Markup {
    html! { div.empty { p { (text) } } }
}

/// A status badge; `kind` is `ok`, `warning` or `failed`.
pub fn badge(kind: &str, text: &str) -> Markup {
    html! { span class={ "badge " (kind) } { (text) } }
}

/// A read-only field holding a value to copy (a token, a URL): selectable by hand, and with
/// JavaScript a button beside it copies it (the button stays hidden without).
/// `label_hidden` keeps the label for screen readers only (in a table row).
pub fn copy_field(v: &View<'_>, id: &str, label: &str, value: &str, label_hidden: bool) -> Markup {
    html! {
        label.sr-only[label_hidden] for=(id) { (label) }
        div.copy {
            input.token id=(id) type="text" readonly value=(value) autocomplete="off" spellcheck="false";
            button.secondary type="button" data-copy=(id) data-copied=(v.t("copied")) hidden { (v.t("copy")) }
        }
    }
}
