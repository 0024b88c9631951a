//! A sandbox on 127.0.0.1:0 and a thin HTTP client that sends literal paths and bodies.

use memberspot_sandbox::{Sandbox, SandboxConfig};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const KEY: &str = "sk_sandbox_demo_key";

pub struct Api {
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: HeaderMap,
}

/// Tests run unthrottled unless they test the throttle.
pub fn config() -> SandboxConfig {
    SandboxConfig {
        rate_limit: 0.0,
        ..SandboxConfig::default()
    }
}

pub async fn start() -> Api {
    start_with(config()).await
}

pub async fn start_with(config: SandboxConfig) -> Api {
    let sandbox = Sandbox::start_local(config).await.expect("sandbox starts");
    Api {
        sandbox,
        http: reqwest::Client::new(),
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.root_url())
    }

    /// Sends `method path` with the API key and an optional raw body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        key: Option<&str>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(key) = key {
            req = req.header("X-API-KEY", key);
        }
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("request succeeds");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body reads");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, Some(KEY)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(&body.to_string()), Some(KEY))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, Some(&body.to_string()), Some(KEY))
            .await
    }

    pub async fn delete(&self, path: &str, body: Value) -> Resp {
        self.send(Method::DELETE, path, Some(&body.to_string()), Some(KEY))
            .await
    }

    /// `GET /_sandbox/state`.
    pub async fn state(&self) -> Value {
        let r = self.get("/_sandbox/state").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    /// Seeded users (admin view) matching `pred`.
    pub async fn users_where(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let state = self.state().await;
        state["users"]
            .as_array()
            .expect("users")
            .iter()
            .filter(|u| pred(u))
            .cloned()
            .collect()
    }

    pub async fn user(&self, email: &str) -> Value {
        let r = self
            .get(&format!("/v1/users/find-by-mail/{}", encode(email)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }
}

/// Like JavaScript's encodeURIComponent for the characters e-mails contain.
pub fn encode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace('@', "%40")
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// The holding of `offer` in a wire user.
pub fn holding<'a>(user: &'a Value, offer: &str) -> Option<&'a Value> {
    user["offers"]
        .as_array()?
        .iter()
        .find(|h| h["offerId"] == offer)
}

pub fn str_of(v: &Value) -> String {
    v.as_str().expect("a string").to_string()
}
