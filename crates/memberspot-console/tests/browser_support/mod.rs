//! The browser the console's journeys drive: Debian's headless Chromium through its
//! chromedriver, with fantoccini; screenshots under `target/screenshots/`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// chromedriver: `MEMBERSPOT_CHROMEDRIVER`, or on the `PATH` (Debian installs it as
/// `/usr/bin/chromedriver`).
pub fn chromedriver() -> PathBuf {
    if let Ok(p) = std::env::var("MEMBERSPOT_CHROMEDRIVER") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromedriver not found on PATH: the browser tests need Debian's `chromium` and \
                 `chromium-driver` (apt-get install -y chromium chromium-driver), or set \
                 MEMBERSPOT_CHROMEDRIVER"
            )
        })
}

pub fn chromium() -> String {
    std::env::var("MEMBERSPOT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// The driver process, ended when the test ends (also on failure).
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn start_driver() -> (Driver, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (driver, format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port} within 10 s");
}

pub async fn browser(driver_url: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--lang=en-US"],
            "prefs": { "intl.accept_languages": "en-US,en" },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("a Chromium session (is `chromium` installed?)")
}

pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

pub async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Accessibility basics of the page on screen: exactly one `h1`, and every visible form
/// field has a `<label for=…>`.
pub async fn check_page(c: &Client, what: &str) {
    let h1 = c.find_all(Locator::Css("h1")).await.expect("h1");
    assert_eq!(h1.len(), 1, "{what}: one h1");
    let fields = c
        .find_all(Locator::Css("input:not([type=hidden]), select, textarea"))
        .await
        .expect("fields");
    for f in fields {
        let id = f.attr("id").await.expect("id attribute");
        let name = f.attr("name").await.ok().flatten().unwrap_or_default();
        let id = id.unwrap_or_else(|| panic!("{what}: field `{name}` has no id for a label"));
        let labels = c
            .find_all(Locator::Css(&format!("label[for=\"{id}\"]")))
            .await
            .expect("labels");
        assert!(!labels.is_empty(), "{what}: field `{id}` has no label");
    }
}
