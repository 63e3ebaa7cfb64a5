//! Real OctoPrint and Moonraker for tests: start one on a free loopback port (or inside a network
//! namespace), wait until it answers, hand out its URL and credentials, and stop it on drop.
//!
//! Reusable from any test crate of the workspace (`#[path = "…/support/peers.rs"] mod peers;`):
//! it needs only std, tokio and serde_json. The programs come from `GANTRY_OCTOPRINT` and
//! `GANTRY_MOONRAKER`, which `cargo xtask test` sets after installing the pinned versions
//! (xtask/src/peers.rs); without them the default install paths under
//! `~/.cache/gantry/peers/` are tried, and a missing program is a test failure that says how to
//! install it.
//!
//! OctoPrint starts from a generated base directory: config.yaml (virtual printer on, every
//! plugin that calls home off, discovery only when asked), users.yaml with the admin user
//! [`OCTOPRINT_USER`] / [`OCTOPRINT_PASSWORD`], and an application key for that user in the
//! appkeys plugin's keys.yaml — so tests need no login round trip to get a key.
//!
//! Moonraker starts from a generated data directory: moonraker.conf (loopback, no trusted
//! clients but 127.0.0.2, history, one webcam, announcements off, zeroconf only when asked) and
//! its Klippy socket path, where a test may serve a Klippy of its own. Its API key is read
//! through a trusted connection from 127.0.0.2, so every other request of the test is an
//! untrusted client's, as on a real network.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The admin user of every test OctoPrint.
pub const OCTOPRINT_USER: &str = "gantry";
/// Its password (the hash in users.yaml below is argon2id of this).
pub const OCTOPRINT_PASSWORD: &str = "gantry-test-pw";
const OCTOPRINT_PASSWORD_HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$Sel9jxHCmDNmLCWE0JozJg$Wlb03LclkVVcWOFaSrimOAfH5/Geasm1prxKjWNhECY";

/// How long a peer may take to start (first starts compile Python bytecode).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Finds a peer's program: the environment variable, else the default install path.
pub fn program(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home
        .join(".cache/gantry/peers")
        .join(name)
        .join("bin")
        .join(name);
    assert!(
        p.is_file(),
        "{name} is not installed: `cargo xtask test` installs it (pinned in xtask/peers/{name}.txt), \
         or set {var} to its program"
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound and released; the race with other processes is small).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How long a peer may take to shut down after SIGTERM before it is killed (it was 5 s). Once
/// in CI, `discovery_mdns` saw no mDNS goodbye from OctoPrint after stopping it; a shutdown cut
/// short by the SIGKILL is one explanation, so the grace is longer and a kill is now its own,
/// named failure there (with the peer's log), told apart from a goodbye that was lost.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// A fresh directory under the system's temp dir, removed by [`TempDir`]'s drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `gantry-<what>-<pid>-<n>`.
    pub fn new(what: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gantry-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        Self(dir)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started peer process: killed (by its pid) and reaped on drop.
#[derive(Debug)]
pub struct PeerProcess {
    child: Child,
    log: PathBuf,
    name: &'static str,
}

impl PeerProcess {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("a log file");
        let err = out.try_clone().expect("a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self { child, log, name }
    }

    /// The last lines of the process's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Panics with the log if the process has exited.
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited during start-up ({status}):\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Stops the process now (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and waits for it.
    /// Returns whether it ended by itself (a clean shutdown: mDNS goodbyes sent, sockets
    /// closed) rather than by the SIGKILL.
    pub fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Kills the process at once (SIGKILL: no shutdown, no mDNS goodbye, as a crash or a
    /// pulled plug would leave it) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.1 exchange for the harness itself (the code under test uses its own
/// client): returns (status, body). `from` binds the local address first.
pub async fn http(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_full(addr, from, method, path, headers, body)
        .await
        .map(|(status, _, body)| (status, body))
}

/// As [`http`], also returning the response's headers (names lower-cased).
pub async fn http_full(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let exchange = async {
        let mut stream = socket.connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok((status, headers, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("harness HTTP request timed out")))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Whether something listens on TCP `port` inside network namespace `ns` (`ss` run there).
pub fn listening_in(ns: &str, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Hltn"])
        .arg(format!("sport = :{port}"))
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
}

/// Where to run a peer.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Run inside this network namespace (`ip netns exec NS …`); the peer listens on
    /// `bind` there.
    pub netns: Option<String>,
    /// The address to listen on (default 127.0.0.1).
    pub bind: Option<IpAddr>,
    /// Advertise over mDNS (OctoPrint's discovery plugin, Moonraker's [zeroconf]). Only inside
    /// a namespace: never on the machine's real network.
    pub mdns: bool,
    /// The port (default: a free one).
    pub port: Option<u16>,
}

impl PeerOptions {
    fn command(&self, program: &Path) -> Command {
        assert!(
            !self.mdns || self.netns.is_some(),
            "mDNS advertisements only inside a network namespace"
        );
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// A running OctoPrint with its virtual printer.
#[derive(Debug)]
pub struct OctoPrint {
    /// `http://127.0.0.1:PORT` (or the namespace's address).
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    /// An application key of the admin user.
    pub api_key: String,
    /// The process.
    pub process: PeerProcess,
    /// The base directory (config, uploads, logs).
    pub dir: TempDir,
}

impl OctoPrint {
    /// Starts OctoPrint on a free loopback port and waits until its API answers.
    pub async fn start() -> Self {
        Self::start_with(PeerOptions::default()).await
    }

    /// Starts OctoPrint as `options` say.
    pub async fn start_with(options: PeerOptions) -> Self {
        let program = program("GANTRY_OCTOPRINT", "octoprint");
        let dir = TempDir::new("octoprint");
        let base = dir.path().join("base");
        let ip = options.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = options.port.unwrap_or_else(free_port);
        let api_key = random_hex(16).to_uppercase();
        std::fs::create_dir_all(base.join("data/appkeys")).unwrap();
        let disabled = if options.mdns {
            "[announcements, softwareupdate, tracking, errortracking, pluginmanager, achievements, \
             firmware_check, file_check, pi_support, health_check]"
        } else {
            "[announcements, softwareupdate, tracking, errortracking, pluginmanager, achievements, \
             firmware_check, file_check, pi_support, health_check, discovery]"
        };
        let discovery = if options.mdns {
            format!(
                "  discovery: {{publicHost: '{ip}', publicPort: {port}, addresses: ['{ip}'], \
                 upnpUuid: 5b8c4a1e-6f5d-4f6a-9c1e-0a0b0c0d0e0f, \
                 model: {{name: Gantry Test, vendor: Gantry}}}}\n"
            )
        } else {
            String::new()
        };
        let config = format!(
            "server:\n  host: {ip}\n  firstRun: false\n  onlineCheck: {{enabled: false}}\n  \
             pluginBlacklist: {{enabled: false}}\n  \
             seenWizards: {{corewizard: 4, classicwebcam: 1, tracking: null, backup: null}}\n\
             plugins:\n  _disabled: {disabled}\n  virtual_printer: {{enabled: true}}\n{discovery}\
             serial: {{port: VIRTUAL, baudrate: 115200, autoconnect: false}}\n"
        );
        std::fs::write(base.join("config.yaml"), config).unwrap();
        std::fs::write(
            base.join("users.yaml"),
            format!(
                "_version: 2\n{OCTOPRINT_USER}:\n  active: true\n  apikey: null\n  groups:\n  - admins\n  \
                 password: {OCTOPRINT_PASSWORD_HASH}\n  permissions: []\n  roles:\n  - user\n  - admin\n  \
                 settings: {{}}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            base.join("data/appkeys/keys.yaml"),
            format!("{OCTOPRINT_USER}:\n- api_key: {api_key}\n  app_id: gantry-tests\n"),
        )
        .unwrap();
        let mut cmd = options.command(&program);
        cmd.arg("--basedir")
            .arg(&base)
            .arg("--config")
            .arg(base.join("config.yaml"))
            .args(["serve", "--iknowwhatimdoing", "--host"])
            .arg(ip.to_string())
            .args(["--port", &port.to_string()]);
        let mut process = PeerProcess::spawn("octoprint", cmd, dir.path().join("octoprint.log"));
        let addr = SocketAddr::new(ip, port);
        let started = Instant::now();
        loop {
            process.check_alive();
            if options.netns.is_none()
                && let Ok((200, _)) = http(
                    addr,
                    None,
                    "GET",
                    "/api/version",
                    &[("X-Api-Key", &api_key)],
                    None,
                )
                .await
            {
                break;
            }
            if let Some(ns) = &options.netns
                && listening_in(ns, port)
            {
                break;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "OctoPrint did not answer within {START_TIMEOUT:?}:\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "peers: OctoPrint at http://{addr} ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Self {
            url: format!("http://{addr}"),
            addr,
            api_key,
            process,
            dir,
        }
    }

    /// Logs in as the admin user the way OctoPrint's web UI does (CSRF cookie, then
    /// `POST /api/login`) and returns the cookie header and the CSRF token for later requests.
    pub async fn browser_login(&self) -> (String, String) {
        // Cookies by name; an emptied cookie (such as `active_logout`) is dropped, as a browser
        // drops an expired one.
        fn keep(
            jar: &mut std::collections::BTreeMap<String, String>,
            headers: &[(String, String)],
        ) {
            for (_, v) in headers.iter().filter(|(k, _)| k == "set-cookie") {
                let pair = v.split(';').next().unwrap_or("");
                if let Some((name, value)) = pair.split_once('=') {
                    if value.is_empty() {
                        jar.remove(name);
                    } else {
                        jar.insert(name.to_owned(), value.to_owned());
                    }
                }
            }
        }
        let header = |jar: &std::collections::BTreeMap<String, String>| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut jar = std::collections::BTreeMap::new();
        let (_, headers, _) = http_full(self.addr, None, "GET", "/login", &[], None)
            .await
            .expect("GET /login");
        keep(&mut jar, &headers);
        let csrf = jar
            .iter()
            .find(|(k, _)| k.starts_with("csrf_token"))
            .map(|(_, v)| v.clone())
            .expect("a CSRF cookie");
        let body = serde_json::json!({"user": OCTOPRINT_USER, "pass": OCTOPRINT_PASSWORD, "remember": false})
            .to_string();
        let (status, headers, text) = http_full(
            self.addr,
            None,
            "POST",
            "/api/login",
            &[("Cookie", &header(&jar)), ("X-CSRF-Token", &csrf)],
            Some(&body),
        )
        .await
        .expect("POST /api/login");
        assert_eq!(status, 200, "browser login: {text}");
        keep(&mut jar, &headers);
        (header(&jar), csrf)
    }

    /// Approves every pending application-key request of the admin user, as the user would in
    /// OctoPrint's dialog. Returns how many were approved.
    pub async fn approve_app_keys(&self) -> usize {
        let (cookie, csrf) = self.browser_login().await;
        let auth = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
        let (status, text) = http(self.addr, None, "GET", "/api/plugin/appkeys", &auth, None)
            .await
            .expect("GET /api/plugin/appkeys");
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let tokens: Vec<String> = v["pending"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for token in &tokens {
            let (status, text) = http(
                self.addr,
                None,
                "POST",
                &format!("/plugin/appkeys/decision/{token}"),
                &auth,
                Some(r#"{"decision": true}"#),
            )
            .await
            .expect("POST decision");
            assert!(status == 204 || status == 200, "decision: {status} {text}");
        }
        tokens.len()
    }

    /// Connects OctoPrint to its virtual printer, as a user does in OctoPrint's Connection
    /// panel, and waits until it is operational.
    pub async fn connect_virtual_printer(&self) {
        let key = [("X-Api-Key", self.api_key.as_str())];
        let body = r#"{"command": "connect", "port": "VIRTUAL", "baudrate": 115200}"#;
        let (status, text) = http(self.addr, None, "POST", "/api/connection", &key, Some(body))
            .await
            .expect("POST /api/connection");
        assert_eq!(status, 204, "connect: {text}");
        let started = Instant::now();
        loop {
            let (_, text) = http(self.addr, None, "GET", "/api/connection", &key, None)
                .await
                .expect("GET /api/connection");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["current"]["state"] == "Operational" {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the virtual printer is not operational after 20 s: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The directory uploads land in.
    pub fn uploads(&self) -> PathBuf {
        self.dir.path().join("base/uploads")
    }
}

/// A running Moonraker.
#[derive(Debug)]
pub struct Moonraker {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its API key (read through the trusted 127.0.0.2).
    pub api_key: String,
    /// Where Moonraker expects Klippy's API socket.
    pub klippy_socket: PathBuf,
    /// The data directory (gcodes/, config/, database/, logs/).
    pub data: PathBuf,
    /// The process.
    pub process: PeerProcess,
    /// The temp dir that holds `data`.
    pub dir: TempDir,
    /// How it was started (for [`Moonraker::restart`]).
    program: PathBuf,
    options: PeerOptions,
}

/// The address Moonraker trusts in tests (the harness uses it; the code under test does not).
pub const MOONRAKER_TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

impl Moonraker {
    /// Starts Moonraker on a free loopback port and waits until its API answers.
    pub async fn start() -> Self {
        Self::start_with(PeerOptions::default()).await
    }

    /// Starts Moonraker as `options` say.
    pub async fn start_with(options: PeerOptions) -> Self {
        let program = program("GANTRY_MOONRAKER", "moonraker");
        let dir = TempDir::new("moonraker");
        let data = dir.path().join("printer_data");
        for sub in ["config", "gcodes", "logs", "comms", "database"] {
            std::fs::create_dir_all(data.join(sub)).unwrap();
        }
        let ip = options.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = options.port.unwrap_or_else(free_port);
        let klippy_socket = data.join("comms/klippy.sock");
        let zeroconf = if options.mdns {
            "[zeroconf]\nmdns_hostname: gantry-test-moonraker\n"
        } else {
            ""
        };
        let conf = format!(
            "[server]\nhost: {ip}\nport: {port}\nklippy_uds_address: {sock}\n\n\
             [machine]\nprovider: none\nvalidate_service: False\nvalidate_config: False\n\n\
             [authorization]\ntrusted_clients:\n  127.0.0.2/32\n\n\
             [announcements]\nenable_moonlight: False\n\n\
             [history]\n\n\
             [webcam front]\nservice: mjpegstreamer\nstream_url: /webcam/?action=stream\n\
             snapshot_url: /webcam/?action=snapshot\nflip_horizontal: True\nrotation: 90\n\n\
             {zeroconf}",
            sock = klippy_socket.display()
        );
        let conf_path = data.join("config/moonraker.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // A clock the test can move forward (JWT expiry is judged by Moonraker's time.time()).
        let hook = dir.path().join("pyhook");
        std::fs::create_dir_all(&hook).unwrap();
        std::fs::write(hook.join("sitecustomize.py"), CLOCK_HOOK).unwrap();
        let clock = dir.path().join("clock_offset");
        std::fs::write(&clock, "0").unwrap();
        let cmd = moonraker_command(&program, &options, dir.path(), &data);
        let mut process = PeerProcess::spawn("moonraker", cmd, dir.path().join("moonraker.log"));
        let addr = SocketAddr::new(ip, port);
        let started = Instant::now();
        let mut api_key = String::new();
        loop {
            process.check_alive();
            if options.netns.is_some() {
                if listening_in(options.netns.as_deref().unwrap_or(""), port) {
                    break;
                }
            } else if let Ok((200, body)) = http(
                addr,
                Some(MOONRAKER_TRUSTED),
                "GET",
                "/access/api_key",
                &[],
                None,
            )
            .await
            {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                api_key = v["result"].as_str().unwrap().to_owned();
                break;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "Moonraker did not answer within {START_TIMEOUT:?}:\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "peers: Moonraker at http://{addr} ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Self {
            url: format!("http://{addr}"),
            addr,
            api_key,
            klippy_socket,
            data,
            process,
            dir,
            program,
            options,
        }
    }

    /// Stops Moonraker and starts it again on the same port and data (same API key, users,
    /// history), waiting until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }

    /// Stops Moonraker (its port closes; [`Moonraker::start_again`] brings it back).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts a stopped Moonraker again on the same port and data, waiting until it answers.
    pub async fn start_again(&mut self) {
        let cmd = moonraker_command(&self.program, &self.options, self.dir.path(), &self.data);
        self.process = PeerProcess::spawn("moonraker", cmd, self.dir.path().join("moonraker2.log"));
        let started = Instant::now();
        loop {
            self.process.check_alive();
            if let Ok((200, _)) = http(
                self.addr,
                Some(MOONRAKER_TRUSTED),
                "GET",
                "/server/info",
                &[],
                None,
            )
            .await
            {
                break;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "Moonraker did not come back:\n{}",
                self.process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a Moonraker user (through the trusted address).
    pub async fn create_user(&self, username: &str, password: &str) {
        let body = serde_json::json!({"username": username, "password": password}).to_string();
        let (status, text) = http(
            self.addr,
            Some(MOONRAKER_TRUSTED),
            "POST",
            "/access/user",
            &[],
            Some(&body),
        )
        .await
        .expect("POST /access/user");
        assert_eq!(status, 200, "creating user {username}: {text}");
    }

    /// Moves Moonraker's wall clock (`time.time()`) `seconds` ahead of the real one; it takes
    /// effect within 0.1 s.
    pub async fn shift_clock(&self, seconds: f64) {
        std::fs::write(self.dir.path().join("clock_offset"), seconds.to_string()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// The G-code root.
    pub fn gcodes(&self) -> PathBuf {
        self.data.join("gcodes")
    }
}

fn moonraker_command(program: &Path, options: &PeerOptions, dir: &Path, data: &Path) -> Command {
    let mut cmd = options.command(program);
    cmd.env("PYTHONPATH", dir.join("pyhook"))
        .env("GANTRY_CLOCK_OFFSET_FILE", dir.join("clock_offset"));
    cmd.arg("-d")
        .arg(data)
        .arg("-c")
        .arg(data.join("config/moonraker.conf"))
        .arg("-n");
    cmd
}

/// Loaded by Moonraker's Python at start-up (PYTHONPATH): `time.time()` plus an offset that a
/// thread re-reads from a file every 0.1 s.
const CLOCK_HOOK: &str = r#"
import os, threading, time
_path = os.environ.get("GANTRY_CLOCK_OFFSET_FILE")
if _path:
    _real = time.time
    _offset = [0.0]
    def _watch():
        while True:
            try:
                with open(_path) as f:
                    _offset[0] = float(f.read().strip() or 0)
            except Exception:
                pass
            _real_sleep(0.1)
    _real_sleep = time.sleep
    def _time():
        return _real() + _offset[0]
    time.time = _time
    threading.Thread(target=_watch, daemon=True).start()
"#;

/// `n` random bytes as hex, from /dev/urandom (no RNG crate needed in test crates).
pub fn random_hex(n: usize) -> String {
    use std::io::Read as _;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
