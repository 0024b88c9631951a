//! Deployment through the real binary: the files in `deploy/`, the `Dockerfile` and
//! `compose.yaml` use only flags, environment variables and paths `memberspot serve`
//! really has (and start it as they say); the systemd unit passes `systemd-analyze`; the
//! binary links only the C runtime; `serve` refuses credentials in clear off loopback;
//! one request id ties an error answer, its log line and its audit record; and every
//! command in docs/operations.md is run here or marked as needing what tests lack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

mod common;

use common::{read, repo, text};

const BIN: &str = env!("CARGO_BIN_EXE_memberspot");

/// `program` with a clean environment for the hub and its data in `dir`.
fn command(program: &str, dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    for var in common::HUB_ENV {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("HOME", dir)
        .kill_on_drop(true);
    c
}

async fn run(dir: &Path, args: &[&str]) -> Output {
    command(BIN, dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("runs")
}

// ---------------------------------------------------------------------------------------
// What the binary really takes

/// The flags and environment variables of `memberspot serve` (its own and the global
/// ones), read from its `--help`.
struct ServeOptions {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

async fn serve_options() -> ServeOptions {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut help = String::new();
    // `serve --help` leaves the global options to `memberspot --help`.
    for args in [&["serve", "--help"][..], &["--help"][..]] {
        let out = run(dir.path(), args).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        help.push_str(&text(&out.stdout));
        help.push('\n');
    }
    // Wrapped lines joined: `[env:` and its name may be on two lines.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut flags = BTreeSet::new();
    for (i, _) in help.match_indices("--") {
        let name: String = help[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if !name.is_empty() {
            flags.insert(format!("--{name}"));
        }
    }
    let env = help
        .match_indices("[env: ")
        .filter_map(|(i, m)| {
            // `[env: NAME=value]`, or `[env: NAME]` for a hidden value.
            let rest = &help[i + m.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    ServeOptions { flags, env }
}

/// Variables the binary reads directly, not through a flag (the master key, the log
/// filter, …): every `"MEMBERSPOT_…"` string in the crates' sources.
fn variables_read_by_the_source() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![repo().join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("tests") && !path.ends_with("benches") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap_or_default();
                for (i, _) in source.match_indices("\"MEMBERSPOT_") {
                    let name: String = source[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// Every `--flag` on the lines of `text` that run `memberspot serve`, and the line.
fn serve_flags(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(at) = line.find("memberspot serve") else {
            continue;
        };
        for word in line[at..].split_whitespace() {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap_or(flag);
                out.push((format!("--{flag}"), line.trim().to_owned()));
            }
        }
    }
    out
}

/// `NAME=value` lines (not comments) of an environment file.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The `[Service]` settings of a unit file (a key may repeat).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn unit_value<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, arguments).
fn dockerfile(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(' ') {
            Some((i, rest)) => (i.to_uppercase(), rest.trim().to_owned()),
            None => (l.to_uppercase(), String::new()),
        })
        .collect()
}

/// The `KEY=value` pairs of a Dockerfile `ENV` line.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not JSON exec form ({e}): {args}"))
}

// ---------------------------------------------------------------------------------------
// Starting and stopping `serve`

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

struct Served {
    child: tokio::process::Child,
    addr: String,
    banner: String,
    lines: Lines,
}

/// Starts `memberspot ARGS` (with `envs`) and waits for the line saying where it listens.
async fn start(dir: &Path, args: &[String], envs: &[(String, String)]) -> Served {
    let mut c = command(BIN, dir);
    c.args(args)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("serve");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut banner = String::new();
    let mut addr = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.strip_prefix("memberspot hub listening on http://") {
            addr = Some(rest.trim().to_owned());
        }
        // The summary ends with the store's line.
        if let (Some(addr), true) = (&addr, line.starts_with("  store ")) {
            return Served {
                child,
                addr: addr.clone(),
                banner,
                lines,
            };
        }
    }
    panic!("`memberspot {}` did not start:\n{banner}", args.join(" "));
}

impl Served {
    /// Stops it as an init system would (SIGTERM), so that it closes its data cleanly.
    async fn stop(mut self) {
        terminate(&mut self.child).await;
    }
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// The port 8787 of the files and the page, replaced by `0` (a free port).
fn any_port(s: &str) -> String {
    s.replace(":8787", ":0")
}

// ---------------------------------------------------------------------------------------
// The files

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_unit_and_its_environment_file_match_the_binary() {
    let options = serve_options().await;
    let direct = variables_read_by_the_source();
    let unit = read("deploy/memberspot.service");
    let settings = unit_settings(&unit);

    let exec = unit_value(&settings, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(
        words[0], "/usr/local/bin/memberspot",
        "installed where the page says"
    );
    assert_eq!(words[1], "serve");
    for (flag, line) in serve_flags(&unit) {
        assert!(
            options.flags.contains(&flag),
            "{flag} in `{line}` is not a serve flag"
        );
    }
    // The hub listens on loopback only: the proxy on the machine is the way in.
    let listen = words
        .windows(2)
        .find(|w| w[0] == "--listen")
        .map(|w| w[1])
        .expect("--listen");
    let listen: std::net::SocketAddr = listen.parse().expect("an address");
    assert!(listen.ip().is_loopback(), "{listen}");

    // The data directory is the state directory systemd creates for the service.
    let state = unit_value(&settings, "StateDirectory");
    assert_eq!(state, ["memberspot"]);
    assert!(
        unit_value(&settings, "Environment").contains(&"MEMBERSPOT_DATA_DIR=/var/lib/memberspot"),
        "the data directory is /var/lib/<StateDirectory>"
    );
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Restart", "on-failure"),
        ("EnvironmentFile", "/etc/memberspot/memberspot.env"),
    ] {
        assert_eq!(unit_value(&settings, key), [want], "{key}");
    }
    for env in unit_value(&settings, "Environment") {
        let name = env.split('=').next().unwrap_or(env);
        assert!(
            options.env.contains(name) || direct.contains(name),
            "{name} is read by nothing"
        );
    }

    // The environment file names only variables the binary reads.
    let env = env_file(&read("deploy/memberspot.env"));
    let commented: Vec<String> = read("deploy/memberspot.env")
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k.to_owned())
        .filter(|k| k.starts_with("MEMBERSPOT_") || k == "DATABASE_URL")
        .collect();
    assert!(!commented.is_empty());
    for name in env.keys().chain(commented.iter()) {
        assert!(
            options.env.contains(name) || direct.contains(name),
            "{name} in memberspot.env is read by nothing"
        );
    }
    assert!(env["MEMBERSPOT_PUBLIC_URL"].starts_with("https://"));

    // And the service's command starts the hub with that environment (on a free port).
    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = words[1..].iter().map(|w| any_port(w)).collect();
    let envs: Vec<(String, String)> = env.into_iter().collect();
    let served = start(dir.path(), &args, &envs).await;
    assert!(
        served
            .banner
            .contains("proxies 127.0.0.1/32, ::1/128 trusted to name the client (X-Forwarded-For)"),
        "{}",
        served.banner
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_unit_passes_systemd_analyze() {
    let Some(analyze) = which("systemd-analyze") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI (.ci/run installs the systemd package)"
        );
        println!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    // The unit as installed, with ExecStart pointing at the binary under test (verify
    // checks that the program exists).
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = read("deploy/memberspot.service").replace(
        "ExecStart=/usr/local/bin/memberspot",
        &format!("ExecStart={BIN}"),
    );
    let path = dir.path().join("memberspot.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = tokio::process::Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .await
        .expect("systemd-analyze verify");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify:\n{said}");
    assert!(!said.contains("memberspot.service"), "warnings:\n{said}");

    // The hardening, as systemd rates it (0 = fully sandboxed, 10 = none).
    let out = tokio::process::Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .await
        .expect("systemd-analyze security");
    let said = text(&out.stdout);
    let score: f64 = said
        .lines()
        .find_map(|l| l.split("memberspot.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}{}", text(&out.stderr)));
    assert!(score <= 2.0, "exposure {score}:\n{said}");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_files_match_the_binary_and_its_health_check_works() {
    let options = serve_options().await;
    let direct = variables_read_by_the_source();
    let known = |name: &str| options.env.contains(name) || direct.contains(name);
    let docker = dockerfile(&read("Dockerfile"));
    let all = |i: &str| -> Vec<&str> {
        docker
            .iter()
            .filter(|(k, _)| k == i)
            .map(|(_, v)| v.as_str())
            .collect()
    };

    // Two stages; the binary comes from the package and binary that exist.
    let froms = all("FROM");
    assert_eq!(froms.len(), 2, "{froms:?}");
    let manifest: toml::Value =
        toml::from_str(&read("crates/memberspot-cli/Cargo.toml")).expect("Cargo.toml");
    let package = manifest["package"]["name"].as_str().expect("name");
    let bin = manifest["bin"][0]["name"].as_str().expect("bin");
    let build = all("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    assert!(
        build.contains("--locked") && build.contains("--release"),
        "{build}"
    );
    assert!(
        build.contains(&format!("--package {package} --bin {bin}")),
        "{build}"
    );
    assert!(build.contains(&format!("target/release/{bin}")), "{build}");

    // A non-root user, the data directory as a volume, one port everywhere.
    let user = all("USER");
    assert!(
        user.len() == 1 && user[0] != "root" && user[0] != "0",
        "{user:?}"
    );
    let env: BTreeMap<String, String> = all("ENV").into_iter().flat_map(env_pairs).collect();
    for name in env.keys() {
        assert!(known(name), "ENV {name} is read by nothing");
    }
    let data = &env["MEMBERSPOT_DATA_DIR"];
    assert_eq!(all("VOLUME"), [format!("[\"{data}\"]")]);
    let listen = &env["MEMBERSPOT_LISTEN"];
    let port = listen.rsplit(':').next().expect("port");
    assert_eq!(all("EXPOSE"), [port]);
    assert_eq!(exec_form(all("ENTRYPOINT")[0]), [bin]);
    let cmd = exec_form(all("CMD")[0]);
    assert_eq!(cmd[0], "serve");
    for flag in cmd.iter().filter(|w| w.starts_with("--")) {
        assert!(options.flags.contains(flag.as_str()), "{flag}");
    }
    let health = all("HEALTHCHECK");
    assert_eq!(health.len(), 1);
    let probe = exec_form(health[0].split_once("CMD ").expect("CMD").1);
    assert_eq!(probe[0], "bash");
    let script = &probe[2];
    assert!(
        script.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && script.contains("GET /healthz "),
        "{script}"
    );

    // compose.yaml: the hub's variables are real, its volume is the data directory, its
    // port the image's, its database the PostgreSQL service's.
    let compose = &yaml_rust2::YamlLoader::load_from_str(&read("compose.yaml")).expect("YAML")[0];
    let hub = &compose["services"]["hub"];
    assert_eq!(hub["build"].as_str(), Some("."));
    let hub_env = hub["environment"].as_hash().expect("environment");
    let mut compose_env = Vec::new();
    for (k, v) in hub_env {
        let name = k.as_str().expect("name");
        assert!(known(name), "compose: {name} is read by nothing");
        compose_env.push((name.to_owned(), v.as_str().expect("value").to_owned()));
    }
    let volumes: Vec<&str> = hub["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.iter().any(|v| v.ends_with(&format!(":{data}"))),
        "{volumes:?}"
    );
    let ports: Vec<&str> = hub["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(ports, [format!("127.0.0.1:{port}:{port}")]);
    let pg = &compose["services"]["postgres"]["environment"];
    let database_url = compose_env
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v.clone())
        .expect("DATABASE_URL");
    let (user, db) = (
        pg["POSTGRES_USER"].as_str().expect("user"),
        pg["POSTGRES_DB"].as_str().expect("db"),
    );
    assert!(
        database_url.starts_with(&format!("postgres://{user}:"))
            && database_url.ends_with(&format!("@postgres:5432/{db}")),
        "{database_url}"
    );
    assert!(hub["depends_on"]["postgres"]["condition"].as_str() == Some("service_healthy"));

    // The image's settings refuse to start without HTTPS in front…
    let dir = tempfile::tempdir().expect("tempdir");
    let image_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.as_str() != "MEMBERSPOT_DATA_DIR")
        .map(|(k, v)| (k.clone(), any_port(v)))
        .collect();
    let out = command(BIN, dir.path())
        .args(&cmd)
        .envs(image_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("serve");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--public-url https://"));

    // …and start with compose's (its database aside), answering the health check.
    let mut with_compose = image_env.clone();
    for (k, v) in &compose_env {
        if k == "DATABASE_URL" {
            continue;
        }
        let v = if v.starts_with("${MEMBERSPOT_PUBLIC_URL") {
            "https://hub.example.com".to_owned()
        } else {
            v.clone()
        };
        with_compose.push((k.clone(), v));
    }
    let served = start(dir.path(), &cmd, &with_compose).await;
    assert!(served.banner.contains("172.16.0.0/12"), "{}", served.banner);
    let local_port = served.addr.rsplit(':').next().expect("port").to_owned();
    let probe_here: Vec<String> = probe
        .iter()
        .map(|a| a.replace(&format!("/{port}"), &format!("/{local_port}")))
        .collect();
    let ok = tokio::process::Command::new(&probe_here[0])
        .args(&probe_here[1..])
        .status()
        .await
        .expect("health check");
    assert!(ok.success(), "the health check passes on a running hub");
    served.stop().await;
    let down = tokio::process::Command::new(&probe_here[0])
        .args(&probe_here[1..])
        .stderr(Stdio::null())
        .status()
        .await
        .expect("health check");
    assert!(!down.success(), "and fails when it is down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_examples_pass_what_the_hub_needs() {
    let options = serve_options().await;
    let unit = read("deploy/memberspot.service");
    let listen = unit
        .split_whitespace()
        .skip_while(|w| *w != "--listen")
        .nth(1)
        .expect("--listen in the unit")
        .to_owned();
    for file in ["deploy/Caddyfile", "deploy/nginx.conf"] {
        let conf = read(file);
        for (flag, line) in serve_flags(&conf) {
            assert!(options.flags.contains(&flag), "{file}: {flag} in `{line}`");
        }
        assert!(conf.contains(&listen), "{file} proxies to {listen}");
    }
    let caddy = read("deploy/Caddyfile");
    let lines = directives(&caddy);
    for want in [
        format!("reverse_proxy {listen} {{"),
        "header_up -Forwarded".into(),
        "flush_interval -1".into(),
    ] {
        assert!(lines.contains(&want.as_str()), "Caddyfile: {want}");
    }
    let nginx = read("deploy/nginx.conf");
    let lines = directives(&nginx);
    for want in [
        format!("proxy_pass http://{listen};"),
        "proxy_set_header Host $host;".into(),
        // $remote_addr, not $proxy_add_x_forwarded_for: a client's own header is dropped.
        "proxy_set_header X-Forwarded-For $remote_addr;".into(),
        "proxy_set_header Forwarded \"\";".into(),
        "proxy_buffering off;".into(),
        "listen 443 ssl http2;".into(),
    ] {
        assert!(lines.contains(&want.as_str()), "nginx.conf: {want}");
    }
    // Both examples name the same public host as the environment file.
    let env = env_file(&read("deploy/memberspot.env"));
    let host = env["MEMBERSPOT_PUBLIC_URL"].trim_start_matches("https://");
    assert!(caddy.contains(&format!("{host} {{")));
    assert!(nginx.contains(&format!("server_name {host};")));
}

/// The lines of a proxy configuration that are not comments, trimmed.
fn directives(conf: &str) -> Vec<&str> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_links_only_the_c_runtime() {
    // The debug binary links the same libraries as the release one.
    for bin in built_binaries() {
        let out = tokio::process::Command::new("ldd")
            .arg(&bin)
            .output()
            .await
            .expect("ldd");
        assert!(out.status.success(), "ldd {}", bin.display());
        let libs: Vec<String> = text(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|l| l.rsplit('/').next().unwrap_or(l).to_owned())
            .collect();
        assert!(libs.iter().any(|l| l == "libc.so.6"), "{libs:?}");
        for lib in &libs {
            let c_runtime = ["linux-vdso.so", "libc.so", "libm.so", "libgcc_s.so", "ld-linux"]
                .iter()
                .any(|ok| lib.starts_with(ok))
                // Older glibc split these off libc.
                || ["libpthread.so", "libdl.so", "librt.so"]
                    .iter()
                    .any(|ok| lib.starts_with(ok));
            assert!(c_runtime, "{} needs {lib}: {libs:?}", bin.display());
        }
    }
}

/// The binaries this test run can see: the debug one, and the release one when built.
fn built_binaries() -> Vec<PathBuf> {
    let mut binaries = vec![PathBuf::from(BIN)];
    let release = Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("release").join("memberspot"));
    match release {
        Some(r) if r.is_file() => binaries.push(r),
        _ => println!("release binary not checked: not built (cargo build --release)"),
    }
    binaries
}

/// What build.rs decides: packed relocations on x86-64 unless turned off or the glibc is
/// older.
async fn relr_expected() -> bool {
    if !cfg!(target_arch = "x86_64")
        || std::env::var("MEMBERSPOT_LINK_RELR").is_ok_and(|v| v == "0")
    {
        return false;
    }
    let out = tokio::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .await
        .expect("getconf");
    let version = text(&out.stdout);
    let minor = version
        .trim()
        .strip_prefix("glibc 2.")
        .and_then(|m| m.split('.').next()?.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 36)
}

/// operations.md promises "glibc 2.36 or newer": no symbol asks for more, and the packed
/// relocations (build.rs) are there, which is what needs 2.36 and saves 2 MB of memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_packs_its_relocations_and_needs_glibc_2_36() {
    for bin in built_binaries() {
        let readelf = |flag: &'static str| {
            let bin = bin.clone();
            async move {
                let out = tokio::process::Command::new("readelf")
                    .args([flag, "-W"])
                    .arg(&bin)
                    .output()
                    .await
                    .expect("readelf (binutils)");
                assert!(out.status.success(), "readelf {flag} {}", bin.display());
                text(&out.stdout)
            }
        };
        // build.rs packs them when the glibc linked against is 2.36 or newer.
        let packed = readelf("-d").await.contains("(RELR)");
        let versions = readelf("-V").await;
        assert_eq!(packed, relr_expected().await, "{}: DT_RELR", bin.display());
        assert_eq!(
            packed,
            versions.contains("GLIBC_ABI_DT_RELR"),
            "{}",
            bin.display()
        );
        let newest = versions
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("GLIBC_2."))
            .filter_map(|v| v.split('.').next()?.parse::<u32>().ok())
            .max();
        assert!(
            newest.is_some_and(|minor| minor <= 36),
            "{} needs glibc 2.{newest:?}",
            bin.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Starting behind HTTPS, and logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_credentials_in_clear_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The page's command, on a free port.
    let out = run(d, &["serve", "--listen", "0.0.0.0:0"]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for says in [
        "refusing to serve",
        "/login",
        "without HTTPS",
        "--public-url https://",
        "--insecure-http",
        "docs/operations.md",
    ] {
        assert!(err.contains(says), "`{says}` in:\n{err}");
    }
    assert!(!err.contains("listening on"), "{err}");
    // OAuth is named always, the webhook receivers when the rules file has sources. (An
    // http:// public URL off loopback is refused earlier, by OAuth's own check.)
    std::fs::write(
        d.join("rules.toml"),
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret_env = \"DS24_IPN_PASSPHRASE\"\n",
    )
    .expect("rules");
    let out = command(BIN, d)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .args(["--rules", d.join("rules.toml").to_str().expect("path")])
        .env("DS24_IPN_PASSPHRASE", "a passphrase")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("serve");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/hooks/*") && err.contains("/oauth/*"),
        "{err}"
    );

    // HTTPS in front, or loopback, or said on purpose: it starts.
    for args in [
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--public-url",
            "https://hub.example.com",
        ][..],
        &["serve", "--listen", "0.0.0.0:0", "--insecure-http"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        start(d, &args, &[]).await.stop().await;
    }
    // The page's command behind a proxy, and a wrong proxy range.
    let page = "memberspot serve --listen 127.0.0.1:8787 --public-url https://hub.example.com --trusted-proxy 127.0.0.1 --trusted-proxy ::1";
    assert!(read("docs/operations.md").contains(page));
    let args: Vec<String> = page.split_whitespace().skip(1).map(any_port).collect();
    let served = start(d, &args, &[]).await;
    assert!(
        served.banner.contains("proxies 127.0.0.1/32, ::1/128"),
        "{}",
        served.banner
    );
    served.stop().await;
    let out = run(d, &["serve", "--trusted-proxy", "10.0.0.0/33"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("10.0.0.0/33"),
        "{}",
        text(&out.stderr)
    );
    // The config file's list, used when no flag or variable gives one.
    std::fs::create_dir_all(d.join("config/memberspot")).expect("config dir");
    std::fs::write(
        d.join("config/memberspot/config.toml"),
        "trusted_proxies = [\"10.0.0.0/8\"]\ntrusted_proxy_header = \"forwarded\"\n",
    )
    .expect("config");
    let args: Vec<String> = ["serve", "--listen", "127.0.0.1:0"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let served = start(d, &args, &[]).await;
    assert!(
        served
            .banner
            .contains("proxies 10.0.0.0/8 trusted to name the client (Forwarded)"),
        "{}",
        served.banner
    );
    served.stop().await;
}

/// The `sh` code blocks of docs/operations.md: each command line, in order.
fn page_commands() -> Vec<String> {
    common::sh_blocks(&read("docs/operations.md"))
}

/// What keeps a command on the page from running in the tests, when it is marked.
const MARKS: &[&str] = &["# needs the internet", "# needs a container daemon"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_walkthrough_ties_one_request_id() {
    let commands = page_commands();
    let at = commands
        .iter()
        .position(|c| c.starts_with("memberspot serve --log-format json"))
        .expect("the Logs walkthrough");
    let walk = &commands[at..at + 4];
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let created = run(
        d,
        &[
            "personas", "create", "support", "--scopes", "read", "--json",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", text(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).expect("json");
    let token = created["token"].as_str().expect("token").to_owned();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let shell = |line: &str| {
        let mut c = command("bash", d);
        c.arg("-c")
            .arg(line.replace("127.0.0.1:8787", &format!("127.0.0.1:{port}")))
            .current_dir(d)
            .env("PATH", path_with_the_binary(d))
            .env("TOKEN", &token)
            .env("MEMBERSPOT_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null());
        c
    };

    // 1: serve in the background (here: held by the test, to stop it afterwards).
    let background = walk[0].strip_suffix('&').expect("in the background").trim();
    let mut server = shell(&format!("exec {background}")).spawn().expect("serve");
    let health = format!("http://127.0.0.1:{port}/healthz");
    let mut up = false;
    for _ in 0..300 {
        if reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "serve did not come up: {}",
        std::fs::read_to_string(d.join("hub.log")).unwrap_or_default()
    );

    // 2: the failing call: its error names the request id.
    let out = shell(&walk[1]).output().await.expect("curl");
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("curl ({e}): {}", text(&out.stdout)));
    assert_eq!(answer["error"]["request_id"], "support-4711", "{answer}");
    assert_eq!(answer["error"]["field"], "email", "{answer}");

    // 3: its log line, a JSON object naming the id, the client and the status.
    let out = shell(&walk[2]).output().await.expect("grep");
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = lines
        .iter()
        .find(|l| l["message"] == "answered")
        .unwrap_or_else(|| panic!("no answered line in {lines:?}"));
    assert_eq!(answered["status"], 400);
    assert_eq!(answered["span"]["request_id"], "support-4711");
    assert_eq!(answered["span"]["client"], "127.0.0.1");
    assert_eq!(
        answered["span"]["path"],
        "/v1/tools/find_user_by_email/call"
    );

    // 4: its audit record.
    let mut records = Vec::new();
    for _ in 0..50 {
        let out = shell(&walk[3]).output().await.expect("audit search");
        assert!(out.status.success(), "{}", text(&out.stderr));
        records = serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("json");
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["request_id"], "support-4711");
    assert_eq!(records[0]["tool"], "find_user_by_email");
    assert_eq!(records[0]["persona"], "support");
    terminate(&mut server).await;
}

/// A PATH whose `memberspot` is the binary under test.
fn path_with_the_binary(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let link = bin.join("memberspot");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).expect("symlink");
    }
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Commands of the page run by other tests (by name): of this file, of `ops_cli.rs` for
/// backups, restores and migrations (there with their own files and directories), or of
/// `service.rs` for those that need systemd.
const RUN_ELSEWHERE: &[(&str, &str)] = &[
    (
        "cargo install --locked --path crates/memberspot-cli",
        "scripts/test, its release build step (installed into target/install)",
    ),
    (
        "systemctl daemon-reload",
        "service::the_service_section_runs_under_systemd",
    ),
    (
        "systemctl enable --now memberspot",
        "service::the_service_section_runs_under_systemd",
    ),
    (
        "journalctl -u memberspot -o cat",
        "service::the_service_section_runs_under_systemd",
    ),
    (
        "systemctl reload caddy",
        "service::the_service_section_runs_under_systemd",
    ),
    (
        "memberspot backup /backups/hub-$(date +%F).msbackup            # asks for a passphrase (twice)",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub (without a terminal it must refuse)",
    ),
    (
        "BACKUP_PASSPHRASE=… memberspot backup FILE --passphrase-env BACKUP_PASSPHRASE   # from cron",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "pg_dump --format=custom --file=/backups/hub-$(date +%F).pgdump \"$DATABASE_URL\"",
        "ops_cli::migrate_check_status_and_newer_databases_on_postgres",
    ),
    (
        "memberspot backup /backups/hub-files-$(date +%F).msbackup --files-only --passphrase-env BACKUP_PASSPHRASE",
        "ops_cli::migrate_check_status_and_newer_databases_on_postgres",
    ),
    (
        "memberspot restore /backups/hub-2026-12-04.msbackup --into /var/lib/memberspot-new",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "memberspot --data-dir /var/lib/memberspot-new status",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "memberspot restore LATEST.msbackup --into /tmp/restore-test --passphrase-env BACKUP_PASSPHRASE",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "memberspot --data-dir /tmp/restore-test audit verify          # ok: N audit records, hash chain intact",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "memberspot --data-dir /tmp/restore-test status                # schema, master key matches, events, audit head",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "memberspot --data-dir /tmp/restore-test connections test NAME # the API key opens and Memberspot accepts it",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "memberspot --data-dir /tmp/restore-test events list --limit 5",
        "ops_cli::a_backup_taken_under_load_restores_a_working_hub",
    ),
    (
        "memberspot migrate --check     # which migrations would run; changes nothing",
        "ops_cli::migrate_check_status_and_newer_databases_on_sqlite",
    ),
    (
        "memberspot migrate             # apply them now (what the next start would do)",
        "ops_cli::migrate_check_status_and_newer_databases_on_sqlite",
    ),
    (
        "systemd-analyze verify /etc/systemd/system/memberspot.service",
        "the_systemd_unit_passes_systemd_analyze",
    ),
    (
        "memberspot serve --listen 127.0.0.1:8787 --public-url https://hub.example.com --trusted-proxy 127.0.0.1 --trusted-proxy ::1",
        "serve_refuses_credentials_in_clear_off_loopback",
    ),
    (
        "memberspot serve --listen 0.0.0.0:8787",
        "serve_refuses_credentials_in_clear_off_loopback",
    ),
    (
        "memberspot serve --log-format json 2> hub.log &",
        "the_logs_walkthrough_ties_one_request_id",
    ),
    (
        "curl -s -H 'X-Request-Id: support-4711' -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"arguments\":{}}' http://127.0.0.1:8787/v1/tools/find_user_by_email/call",
        "the_logs_walkthrough_ties_one_request_id",
    ),
    (
        "grep support-4711 hub.log",
        "the_logs_walkthrough_ties_one_request_id",
    ),
    (
        "memberspot audit search --request-id support-4711 --json",
        "the_logs_walkthrough_ties_one_request_id",
    ),
];

/// Absolute paths of the page that the sandbox below moves into its own root.
const ROOTED: &[&str] = &["/etc/", "/usr/local/bin/", "/var/lib/"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_the_operations_page_is_run_or_marked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let root = d.join("root");
    std::fs::create_dir_all(root.join("usr/local/bin")).expect("root");
    // As copied there by the page's `scp` (which needs the internet).
    std::fs::copy(BIN, root.join("usr/local/bin/memberspot")).expect("installed binary");
    // The working directory of the page: the copied binary and the repository's files.
    let work = d.join("work");
    std::fs::create_dir_all(&work).expect("work");
    std::fs::copy(BIN, work.join("memberspot")).expect("binary");
    std::os::unix::fs::symlink(repo().join("deploy"), work.join("deploy")).expect("deploy");
    let path = path_with_the_binary(d);

    let mut ran = Vec::new();
    for line in page_commands() {
        if MARKS.iter().any(|m| line.ends_with(m)) {
            continue;
        }
        if let Some((_, test)) = RUN_ELSEWHERE.iter().find(|(c, _)| *c == line) {
            ran.push(format!("{line}   (in {test})"));
            continue;
        }
        let mut here = line.clone();
        for prefix in ROOTED {
            for before in [' ', '='] {
                here = here.replace(
                    &format!("{before}{prefix}"),
                    &format!("{before}{}{prefix}", root.display()),
                );
            }
        }
        let out = command("bash", d)
            .arg("-c")
            .arg(&here)
            .current_dir(&work)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("bash");
        assert!(
            out.status.success(),
            "`{line}` failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        ran.push(line);
    }
    println!("ran:\n  {}", ran.join("\n  "));
    // What those commands did, where it shows.
    let installed = root.join("usr/local/bin/memberspot");
    assert!(installed.is_file());
    for (file, mode) in [
        ("etc/systemd/system/memberspot.service", 0o644),
        ("etc/memberspot/memberspot.env", 0o600),
        ("etc/caddy/Caddyfile", 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert!(
        root.join("var/lib/memberspot/hub.db").is_file(),
        "the persona was created in the service's data directory"
    );
    let dotenv = env_file(&std::fs::read_to_string(work.join(".env")).expect(".env"));
    assert_eq!(dotenv["POSTGRES_PASSWORD"].len(), 48);
    assert_eq!(dotenv["MEMBERSPOT_PUBLIC_URL"], "https://hub.example.com");
    // Every command the page runs elsewhere is still on the page.
    let page = page_commands();
    for (c, test) in RUN_ELSEWHERE {
        assert!(
            page.iter().any(|p| p == c),
            "{test} runs `{c}`, no longer on the page"
        );
    }
    // Every `memberspot serve` flag on the page exists.
    let options = serve_options().await;
    for (flag, line) in serve_flags(&read("docs/operations.md")) {
        assert!(options.flags.contains(&flag), "{flag} in `{line}`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_log_lines_name_the_client_behind_a_trusted_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let rules = d.join("rules.toml");
    std::fs::write(
        &rules,
        "[sources.ds24]\nprovider = \"digistore24\"\nsecret_env = \"DS24_IPN_PASSPHRASE\"\n",
    )
    .expect("rules");
    let args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--trusted-proxy",
        "127.0.0.1",
        "--rules",
        rules.to_str().expect("path"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let envs = [("DS24_IPN_PASSPHRASE".to_owned(), "a passphrase".to_owned())];
    let mut served = start(d, &args, &envs).await;
    // A delivery with a wrong signature, through the proxy on this machine.
    let answer = reqwest::Client::new()
        .post(format!("http://{}/hooks/ds24", served.addr))
        .header("x-forwarded-for", "198.51.100.23, 203.0.113.7")
        .header("x-request-id", "hook-77")
        .form(&[("event", "payment"), ("sha_sign", "0000")])
        .send()
        .await
        .expect("post");
    assert_eq!(answer.headers()["x-request-id"], "hook-77");
    let mut refused = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(10), served.lines.next_line()).await
    {
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "webhook refused"
        {
            refused = Some(v);
            break;
        }
    }
    let refused = refused.expect("a `webhook refused` line");
    assert_eq!(refused["span"]["request_id"], "hook-77", "{refused}");
    assert_eq!(refused["span"]["client"], "203.0.113.7", "{refused}");
    assert_eq!(refused["source"], "ds24", "{refused}");
    served.stop().await;
}

/// The release profile builds the workspace's own crates at `opt-level = 1` (see the root
/// Cargo.toml): a crate added without its section would be built at full optimisation,
/// slowing the cold build for nothing.
#[test]
fn every_workspace_crate_has_its_release_opt_level() {
    let manifest = read("Cargo.toml");
    let crates = std::fs::read_dir(repo().join("crates")).expect("crates/");
    for entry in crates {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let section = format!("[profile.release.package.{name}]\nopt-level = 1\n");
        assert!(
            manifest.contains(&section),
            "Cargo.toml: add\n{section}for the new crate `{name}`"
        );
    }
}
