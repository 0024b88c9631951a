//! docs/operations.md's "Run as a service" and "Behind HTTPS" sections, run for real.
//!
//! - systemd as the init of a private namespace (its own PID 1, mounts, network and host
//!   name, with fresh `/run`, `/tmp`, `/var/lib`, `/var/log` and `/etc/systemd/system`, so
//!   nothing reaches the machine's own) runs the page's commands in order: the unit starts
//!   the hub under a dynamic user, the journal shows the setup link, a persona made by the
//!   page's command works through the service, a killed hub is restarted, a stop is clean,
//!   and Caddy reloads the page's Caddyfile.
//! - The Caddy and nginx examples in front of the hub, with only their name, ports and
//!   certificate changed: TLS ends at the proxy, the hub names the real client and never
//!   one a client wrote into `X-Forwarded-For` or `Forwarded`, and `/mcp` answers for the
//!   public host.
//!
//! Both need root (namespaces, a proxy's ports) and Debian's `systemd`, `caddy` and
//! `nginx-light` packages, which `.ci/run` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{read, repo, text};

const BIN: &str = env!("CARGO_BIN_EXE_memberspot");

/// A directory of this test's own under the target directory: unlike `/tmp`, it is the
/// same path inside the namespace.
fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

// ---------------------------------------------------------------------------------------
// systemd in a private namespace

/// Units of a machine's boot that would act beyond the namespace (kernel settings,
/// devices, modules, the machine's files) or need hardware: masked, as a container's
/// init leaves them out. The journal stays.
const MASKED: &[&str] = &[
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-sysctl.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "ldconfig.service",
    "systemd-random-seed.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-update-utmp.service",
    "systemd-pstore.service",
    "systemd-timesyncd.service",
    "systemd-remount-fs.service",
    "systemd-hwdb-update.service",
    "systemd-sysusers.service",
    "systemd-journal-catalog-update.service",
    "systemd-update-done.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-ask-password-console.path",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "tmp.mount",
    "dbus.socket",
    "cryptsetup.target",
    "integritysetup.target",
    "veritysetup.target",
];

/// Runs inside the new namespaces, then becomes systemd. Every directory systemd or the
/// page writes to is a fresh tmpfs here; `/etc/caddy` holds what Debian's package ships.
const BOOT: &str = r#"set -e
mount --make-rprivate /
for d in /run /tmp /var/tmp /var/lib /var/log /var/cache /etc/systemd/system /etc/memberspot /etc/caddy /usr/local/bin; do
  mkdir -p "$d"; mount -t tmpfs -o mode=0755 tmpfs "$d"
done
chmod 1777 /tmp /var/tmp
mkdir -p /var/lib/caddy && chown caddy:caddy /var/lib/caddy
printf ':80 {\n\trespond "Caddy works"\n}\n' > /etc/caddy/Caddyfile
for u in $MASKED; do ln -s /dev/null "/etc/systemd/system/$u"; done
printf '[Unit]\nDescription=test boot\n' > /etc/systemd/system/boot-test.target
ip link set lo up
exec env container=memberspot-test /lib/systemd/systemd --system --unit=boot-test.target
"#;

/// systemd booted in its own namespaces; killed (with everything it started) on drop.
struct Booted {
    unshare: std::process::Child,
    /// systemd's process id, as this machine sees it.
    pid: u32,
    work: PathBuf,
}

impl Booted {
    fn start(work: &Path) -> Booted {
        assert!(
            Path::new("/lib/systemd/systemd").is_file(),
            "systemd is not installed (apt-get install systemd; .ci/run does)"
        );
        let mut unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--uts",
                "--net",
            ])
            .args(["sh", "-c", BOOT])
            .env("MASKED", MASKED.join(" "))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            let child = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
            if let Some(pid) = child {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    break pid;
                }
            }
            if let Ok(Some(status)) = unshare.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = unshare.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("the namespace did not boot ({status}; needs root): {err}");
            }
            assert!(Instant::now() < deadline, "systemd did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let booted = Booted {
            unshare,
            pid,
            work: work.to_owned(),
        };
        booted.wait_for("systemd up", || {
            let state = text(&booted.sh("systemctl is-system-running").stdout);
            matches!(state.trim(), "running" | "degraded")
        });
        booted
    }

    /// `line` in a shell inside the namespaces, in the work directory, as root.
    fn sh(&self, line: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "-u", "-n"])
            .arg(format!("--wd={}", self.work.display()))
            .args(["sh", "-c", line])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// `line`, which must succeed; its standard output.
    fn ok(&self, line: &str) -> String {
        let out = self.sh(line);
        assert!(
            out.status.success(),
            "`{line}` failed ({}):\n{}{}\njournal:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            text(&self.sh("journalctl -o cat --no-pager | tail -n 40").stdout)
        );
        text(&out.stdout)
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; journal:\n{}",
                text(&self.sh("journalctl -o cat --no-pager | tail -n 40").stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn show(&self, unit: &str, property: &str) -> String {
        self.ok(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_owned()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // The namespace's PID 1: the kernel ends every process in it.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The commands of the `sh` block that follows `heading` on docs/operations.md, without
/// those marked as needing the internet.
fn section_commands(heading: &str) -> Vec<String> {
    let page = read("docs/operations.md");
    let after = page
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no `{heading}` on the page"))
        .1;
    let end = after.find("\n## ").unwrap_or(after.len());
    common::sh_blocks(&after[..end])
        .into_iter()
        .filter(|c| !c.ends_with("# needs the internet"))
        .collect()
}

#[test]
fn the_service_section_runs_under_systemd() {
    let work = work_dir("service");
    // The page's working directory: the binary (as the `scp` line leaves it) and the
    // repository's deploy/ files.
    std::fs::copy(BIN, work.join("memberspot")).expect("binary");
    std::fs::create_dir_all(work.join("deploy")).expect("deploy");
    for f in ["memberspot.service", "memberspot.env", "Caddyfile"] {
        std::fs::copy(repo().join("deploy").join(f), work.join("deploy").join(f)).expect(f);
    }
    let sys = Booted::start(&work);

    // "Run as a service", in order. The setup link reaches the journal once serve is up.
    let commands = section_commands("## Run as a service");
    assert!(commands.len() >= 8, "{commands:?}");
    let mut journal = String::new();
    let mut persona = String::new();
    for line in &commands {
        if line.starts_with("journalctl") {
            sys.wait_for("the setup link in the journal", || {
                journal = sys.ok(line);
                journal.contains("/setup?token=")
            });
        } else {
            let out = sys.ok(line);
            if line.contains("personas create") {
                persona = out;
            }
        }
    }
    println!("journal:\n{journal}");
    assert!(
        journal.contains("https://hub.example.com/setup?token="),
        "the setup link names the public URL from the environment file"
    );
    // JSON logs, as the environment file asks.
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\"")),
        "{journal}"
    );

    // The hub runs as the unit's dynamic user, its data in the state directory.
    assert_eq!(sys.show("memberspot", "ActiveState"), "active");
    let main = sys.show("memberspot", "MainPID");
    let uid = sys.ok(&format!("stat -c %u /proc/{main}"));
    assert_ne!(uid.trim(), "0", "serve runs as root");
    assert_eq!(
        sys.ok("readlink /var/lib/memberspot").trim(),
        "private/memberspot",
        "StateDirectory with DynamicUser"
    );
    sys.ok("test -s /var/lib/memberspot/admin.token && test -f /var/lib/memberspot/hub.db");
    sys.ok("curl -sf http://127.0.0.1:8787/healthz");

    // The persona the page creates as root works through the running service.
    let token = persona
        .split_whitespace()
        .find(|w| w.starts_with("msh_"))
        .unwrap_or_else(|| panic!("no token in {persona}"))
        .to_owned();
    let call = format!(
        "curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
         -d '{{\"arguments\":{{}}}}' http://127.0.0.1:8787/v1/tools/list_offers/call"
    );
    let answer = sys.ok(&call);
    assert!(answer.contains("\"offers\""), "{answer}");

    // Restart=on-failure: a hub killed outright comes back on its own.
    sys.ok("systemctl kill -s KILL memberspot");
    sys.wait_for("the restart", || {
        sys.show("memberspot", "NRestarts") == "1"
            && sys.show("memberspot", "ActiveState") == "active"
            && sys
                .sh("curl -sf http://127.0.0.1:8787/healthz")
                .status
                .success()
    });
    assert_ne!(sys.show("memberspot", "MainPID"), main);
    assert!(sys.ok(&call).contains("\"offers\""));

    // A stop is a clean shutdown (exit 0 on SIGTERM, within TimeoutStopSec).
    sys.ok("systemctl stop memberspot");
    assert_eq!(sys.show("memberspot", "ActiveState"), "inactive");
    assert_eq!(sys.show("memberspot", "Result"), "success");
    sys.ok("systemctl start memberspot");

    // "Behind HTTPS": Caddy from Debian's package, running its default file, reloads the
    // page's. Its certificate needs the internet (Let's Encrypt); the configuration it
    // runs, and its redirect to HTTPS, do not.
    sys.ok("systemctl start caddy");
    sys.wait_for("caddy", || {
        text(&sys.sh("curl -s http://127.0.0.1/").stdout).contains("Caddy works")
    });
    for line in section_commands("## Behind HTTPS") {
        if line.starts_with("install") || line.starts_with("systemctl") {
            sys.ok(&line);
        }
    }
    let config = sys.ok("curl -s http://localhost:2019/config/");
    assert!(
        config.contains("hub.example.com") && config.contains("127.0.0.1:8787"),
        "{config}"
    );
    let redirect = sys.ok("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: hub.example.com' http://127.0.0.1/login");
    assert!(
        redirect.starts_with("308 https://hub.example.com/login"),
        "{redirect}"
    );
}

// ---------------------------------------------------------------------------------------
// Caddy and nginx in front of the hub

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master ends its workers only when asked to stop.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `memberspot` with a clean environment and its data in `dir/data`.
fn memberspot(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    for var in common::HUB_ENV {
        c.env_remove(var);
    }
    c.env("MEMBERSPOT_DATA_DIR", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("HOME", dir)
        .stdin(Stdio::null());
    c
}

/// The page's `memberspot serve` line behind a proxy, on `port`, with `public_url`, JSON
/// logs into `dir/hub.log`.
fn serve_behind_a_proxy(dir: &Path, port: u16, public_url: &str) -> Running {
    let line = common::sh_blocks(&read("docs/operations.md"))
        .into_iter()
        .find(|l| l.starts_with("memberspot serve --listen 127.0.0.1:8787 --public-url"))
        .expect("the page starts the hub behind a proxy");
    let line = line
        .replace("127.0.0.1:8787", &format!("127.0.0.1:{port}"))
        .replace("https://hub.example.com", public_url);
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let log = std::fs::File::create(dir.join("hub.log")).expect("log");
    let hub = Running(
        memberspot(dir)
            .args(&args)
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("serve"),
    );
    wait_until("the hub", || {
        curl(&[&format!("http://127.0.0.1:{port}/healthz")]).0 == "200"
    });
    hub
}

/// `curl -sk ARGS`: the status code and the body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let body = text(&out.stdout);
    let (body, code) = body.rsplit_once('\n').unwrap_or(("", "000"));
    (code.to_owned(), body.to_owned())
}

/// What the hub logged for the request with `id`, as the JSON line of its answer.
fn answered(dir: &Path, id: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(&format!("the log line of {id}"), || {
        let log = std::fs::read_to_string(dir.join("hub.log")).unwrap_or_default();
        found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "answered" && l["span"]["request_id"] == id);
        found.is_some()
    });
    found.unwrap_or_default()
}

/// Through the proxy at `https` (and `http`, which must redirect): TLS ends there, the
/// hub sees the real client and not what the client wrote, the request id passes, and
/// `/mcp` answers for the public host.
fn check_the_proxy(name: &str, dir: &Path, http: u16, https: u16, token: &str) {
    let resolve = format!("hub.example.com:{https}:127.0.0.1");
    let base = format!("https://hub.example.com:{https}");
    let (code, _) = curl(&[
        "-H",
        "Host: hub.example.com",
        &format!("http://127.0.0.1:{http}/login"),
    ]);
    assert!(
        code == "301" || code == "308",
        "{name}: plain HTTP answered {code}"
    );
    let (code, body) = curl(&["--resolve", &resolve, &format!("{base}/healthz")]);
    assert_eq!(code, "200", "{name}: {body}");

    // A client naming another address in both forwarding headers.
    let id = format!("through-{name}");
    let call = format!("{base}/v1/tools/list_offers/call");
    let (code, body) = post_json(
        &resolve,
        &[
            "X-Forwarded-For: 203.0.113.66",
            "Forwarded: for=203.0.113.77",
            &format!("X-Request-Id: {id}"),
        ],
        "{\"arguments\":{}}",
        &call,
    );
    assert_eq!(code, "401", "{name}: {body}");
    assert!(
        body.contains(&id),
        "{name}: the error names the request id: {body}"
    );
    let line = answered(dir, &id);
    assert_eq!(line["span"]["client"], "127.0.0.1", "{name}: {line}");

    // A tool call and an MCP session, with the persona's token, for the public host.
    let bearer = format!("Authorization: Bearer {token}");
    let (code, body) = post_json(&resolve, &[&bearer], "{\"arguments\":{}}", &call);
    assert_eq!(code, "200", "{name}: {body}");
    assert!(body.contains("\"offers\""), "{name}: {body}");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"proxy-test","version":"1"}}}"#;
    let (code, body) = post_json(
        &resolve,
        &[&bearer, "Accept: application/json, text/event-stream"],
        init,
        &format!("{base}/mcp"),
    );
    assert_eq!(code, "200", "{name}: /mcp {body}");
    assert!(body.contains("\"serverInfo\""), "{name}: {body}");
}

/// `curl` POSTing the JSON `body` to `url` (resolved to this machine) with `headers`.
fn post_json(resolve: &str, headers: &[&str], body: &str, url: &str) -> (String, String) {
    let mut args = vec!["--resolve", resolve, "-H", "Content-Type: application/json"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.extend(["-d", body, url]);
    curl(&args)
}

/// A self-signed certificate for hub.example.com: (certificate, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=hub.example.com"])
        .args(["-addext", "subjectAltName=DNS:hub.example.com"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    (cert, key)
}

/// A persona for the calls through the proxies, made before the hub starts.
fn persona(dir: &Path) -> String {
    let out = memberspot(dir)
        .args([
            "personas", "create", "proxied", "--scopes", "read", "--json",
        ])
        .output()
        .expect("personas create");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["token"].as_str().expect("token").to_owned()
}

#[test]
fn nginx_example_in_front_of_the_hub() {
    let dir = work_dir("nginx");
    let token = persona(&dir);
    let (hub_port, http, https) = (free_port(), free_port(), free_port());
    // nginx's `$host` has no port: the public URL as on the page.
    let _hub = serve_behind_a_proxy(&dir, hub_port, "https://hub.example.com");
    let (cert, key) = certificate(&dir);
    let site = read("deploy/nginx.conf")
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
        .replace("listen 443 ssl", &format!("listen 127.0.0.1:{https} ssl"))
        .replace(
            "/etc/letsencrypt/live/hub.example.com/fullchain.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/hub.example.com/privkey.pem",
            &key.display().to_string(),
        )
        .replace("127.0.0.1:8787", &format!("127.0.0.1:{hub_port}"))
        .lines()
        .filter(|l| !l.trim_start().starts_with("listen [::]"))
        .collect::<Vec<_>>()
        .join("\n");
    let site_file = dir.join("site.conf");
    std::fs::write(&site_file, site).expect("site");
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  include {};\n}}\n",
            site_file.display()
        ),
    )
    .expect("nginx wrapper");
    let out = Command::new("nginx")
        .args(["-t", "-p"])
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .expect("nginx (apt-get install nginx-light; .ci/run does)");
    assert!(out.status.success(), "nginx -t: {}", text(&out.stderr));
    let _nginx = Running(
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx"),
    );
    wait_until("nginx", || {
        std::net::TcpStream::connect(("127.0.0.1", https)).is_ok()
    });
    check_the_proxy("nginx", &dir, http, https, &token);
}

#[test]
fn caddy_example_in_front_of_the_hub() {
    let dir = work_dir("caddy");
    let token = persona(&dir);
    let (hub_port, http, https) = (free_port(), free_port(), free_port());
    // Caddy passes the Host header on with its port.
    let _hub = serve_behind_a_proxy(&dir, hub_port, &format!("https://hub.example.com:{https}"));
    // The page's file with a certificate from Caddy's own CA instead of Let's Encrypt.
    let site = read("deploy/Caddyfile")
        .replace(
            "hub.example.com {",
            &format!("hub.example.com:{https} {{\n\ttls internal"),
        )
        .replace("127.0.0.1:8787", &format!("127.0.0.1:{hub_port}"));
    assert!(
        site.contains("tls internal"),
        "the site block moved: {site}"
    );
    let conf = dir.join("Caddyfile");
    std::fs::write(
        &conf,
        format!(
            "{{\n\tadmin off\n\thttp_port {http}\n\thttps_port {https}\n\tskip_install_trust\n\
             \tstorage file_system {}\n}}\n\n{site}\n",
            dir.join("caddy-data").display()
        ),
    )
    .expect("Caddyfile");
    let log = std::fs::File::create(dir.join("caddy.log")).expect("log");
    let _caddy = Running(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("xdg-data"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("caddy (apt-get install caddy; .ci/run does)"),
    );
    wait_until("caddy", || {
        curl(&[
            "--resolve",
            &format!("hub.example.com:{https}:127.0.0.1"),
            &format!("https://hub.example.com:{https}/healthz"),
        ])
        .0 == "200"
    });
    check_the_proxy("caddy", &dir, http, https, &token);
}
