//! Helpers for the end-to-end tests: build the real binaries once, start a
//! real host on a free port with a private plugins directory, and talk to
//! it over real WebSockets. Starting processes, temp dirs, installing
//! plugins and build paths come from `rohrpost-harness`, which the
//! benchmarks share.

pub mod django;
pub mod proxy_backend;
pub mod redis;
pub mod tls;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
pub use rohrpost_harness::{library_file_name, target_dir, workspace};
use rohrpost_harness::{Echo, HostSpec, Process, Watch};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};

/// The port of an address or URL such as `http://127.0.0.1:8001/path`,
/// for a plugin table's `sandbox = { connect_ports = [...] }`.
pub fn port_of(url: &str) -> u16 {
    let rest = url.split("://").last().unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// The pids of a `fork` reply of the faults plugin (`data.pids`).
pub fn forked_pids(reply: &Value) -> Vec<u32> {
    reply["data"]["pids"]
        .as_array()
        .unwrap_or_else(|| panic!("no pids in {reply}"))
        .iter()
        .filter_map(|pid| u32::try_from(pid.as_u64()?).ok())
        .collect()
}

/// Waits until none of `pids` runs (gone, or a zombie), failing the test
/// after `timeout` with those still running.
pub async fn wait_until_ended(pids: &[u32], timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let running: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&pid| rohrpost_harness::is_running(pid))
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after the worker ended: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every library the tests load, by crate name.
const LIBRARIES: &[&str] = &[
    "ping",
    "subscriptions",
    "fixture-testkit",
    "fixture-echo-v1",
    "fixture-echo-v2",
    "fixture-dup-ping",
    "fixture-no-root",
    "fixture-abi-v2",
    "fixture-faults",
    "fixture-hostile",
    "fixture-bad-init",
    "fixture-reference",
    "fixture-early",
    "proxy",
];

/// Builds the host and every test plugin (debug profile) once per test
/// binary; cargo makes this a no-op when nothing changed.
pub fn build() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Files and directories the tests make (and cargo's outputs) are
        // writable by their owner only, whatever umask the tests run
        // under: the host refuses plugins that others may write.
        // SAFETY: umask has no preconditions.
        unsafe {
            libc::umask(0o022);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "--quiet", "-p", "rohrpost-host"]);
        for lib in LIBRARIES {
            cmd.args(["-p", lib]);
        }
        let status = cmd.status().expect("cannot run cargo build");
        assert!(
            status.success(),
            "cargo build of the host and plugins failed"
        );
        Built {
            dir: target_dir().join("debug"),
        }
    })
}

/// Builds the test plugin `fixture-echo-v1` with `panic = "abort"` (in a
/// target directory of its own, as the whole dependency tree is rebuilt) and
/// returns its library.
pub fn build_echo_with_panic_abort() -> PathBuf {
    let target = target_dir().join("panic-abort");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--quiet",
            "-p",
            "fixture-echo-v1",
            "--config",
            "profile.dev.panic=\"abort\"",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cannot run cargo build");
    assert!(status.success(), "cargo build with panic = abort failed");
    Built {
        dir: target.join("debug"),
    }
    .plugin("fixture-echo-v1")
}

/// Builds the plugin under `tests/compat/<name>` on its own (it is not a
/// workspace member: it stands for a plugin built elsewhere, against an
/// earlier plugin-api release) and returns its library.
pub fn build_compat_plugin(name: &str, crate_name: &str) -> PathBuf {
    let target = target_dir().join("compat");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace().join("tests/compat").join(name))
        .args(["build", "--quiet", "--locked", "--target-dir"])
        .arg(&target)
        .status()
        .expect("cannot run cargo build");
    assert!(
        status.success(),
        "cargo build of tests/compat/{name} failed"
    );
    Built {
        dir: target.join("debug"),
    }
    .plugin(crate_name)
}

/// Paths of the built artifacts.
pub struct Built {
    dir: PathBuf,
}

impl Built {
    /// The `rohrpost` binary.
    pub fn host(&self) -> PathBuf {
        self.dir.join("rohrpost")
    }

    /// The library of a plugin crate, e.g. `plugin("ping")`.
    pub fn plugin(&self, crate_name: &str) -> PathBuf {
        self.dir.join(library_file_name(crate_name))
    }
}

/// A fresh, empty directory only its owner may enter, removed on drop.
pub struct TempDir(rohrpost_harness::TempDir);

impl TempDir {
    pub fn new(label: &str) -> Self {
        match rohrpost_harness::TempDir::new(&format!("test-{label}")) {
            Ok(dir) => TempDir(dir),
            Err(error) => panic!("{error}"),
        }
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The host run with `args` until it exits (`--check-config`, or a host
/// that must refuse to start): its exit code and what it wrote to stderr.
pub fn run_host<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String) {
    let out = std::process::Command::new(build().host())
        .args(args)
        .output()
        .expect("the host binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `rohrpost --check-config` on `toml`, written to `rohrpost.toml` in
/// `dir`, with no plugins directory: its exit code and standard error.
pub fn check_config(dir: &Path, toml: &str) -> (Option<i32>, String) {
    let file = dir.join("rohrpost.toml");
    std::fs::write(&file, toml).expect("the config file is written");
    let absent = dir.join("absent");
    run_host(&[
        "--check-config".as_ref(),
        file.as_os_str(),
        "--plugins".as_ref(),
        absent.as_os_str(),
    ])
}

/// Copies `from` into `dir` as `name` the way users are told to deploy:
/// write under a hidden temporary name with mode 0644, then rename into
/// place.
pub fn install(from: &Path, dir: &Path, name: &str) {
    if let Err(error) = rohrpost_harness::install_as(from, dir, OsStr::new(name)) {
        panic!("{error}");
    }
}

/// Sets a file's or directory's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    if let Err(error) = rohrpost_harness::set_mode(path, mode) {
        panic!("{error}");
    }
}

/// A running host process with its own plugins directory.
pub struct Host {
    /// First, so that it is killed before its directories go.
    process: Process,
    pub addr: String,
    pub plugins: TempDir,
    _work: rohrpost_harness::TempDir,
    _bin: Option<rohrpost_harness::TempDir>,
    _config: Option<TempDir>,
}

impl Host {
    /// Starts a host with these plugin crates installed before start.
    pub fn start(plugins: &[&str]) -> Result<Host> {
        Self::start_with(plugins, &[])
    }

    /// Like [`Host::start`], with extra command-line arguments.
    pub fn start_with(plugins: &[&str], args: &[&str]) -> Result<Host> {
        Self::start_with_env(plugins, args, &[])
    }

    /// Like [`Host::start_with`], with extra environment variables.
    pub fn start_with_env(plugins: &[&str], args: &[&str], env: &[(&str, &str)]) -> Result<Host> {
        Self::launch(plugins, args, env, None, None)
    }

    /// Like [`Host::start`], the host started with this soft limit of open
    /// files (at most the hard limit), set in its process alone: the limit
    /// of this process is shared by every test running in it.
    pub fn start_with_soft_open_files(plugins: &[&str], limit: u64) -> Result<Host> {
        Self::launch(plugins, &[], &[], Some(limit), None)
    }

    /// Like [`Host::start_with`], the host running as the user and group
    /// `user` (ids), for a test run by root.
    pub fn start_as(
        plugins: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Result<Host> {
        Self::launch(plugins, args, env, None, user)
    }

    fn launch(
        plugins: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        soft_open_files: Option<u64>,
        user: Option<(u32, u32)>,
    ) -> Result<Host> {
        let built = build();
        let binary = built.host();
        let libraries: Vec<PathBuf> = plugins.iter().map(|p| built.plugin(p)).collect();
        let libraries: Vec<&Path> = libraries.iter().map(PathBuf::as_path).collect();
        let spec = HostSpec {
            binary: &binary,
            libraries: &libraries,
            args,
            env,
            log: "info,rohrpost_host=debug",
            label: "test",
            user,
        };
        let echo = if std::env::var_os("ROHRPOST_TEST_ECHO").is_some() {
            Echo::Everything
        } else {
            Echo::Nothing
        };
        // The host dies with the test, even one that ends without
        // unwinding.
        let mut watch = Watch::new("host").keep_log().echo(echo).die_with_parent();
        if let Some(limit) = soft_open_files {
            watch = watch.soft_open_files(limit);
        }
        let host = rohrpost_harness::start_host(&spec, watch)?;
        Ok(Host {
            addr: host.process.addr().to_owned(),
            process: host.process,
            plugins: TempDir(host.plugins),
            _work: host.work,
            _bin: host.bin,
            _config: None,
        })
    }

    /// Starts a host with a config file holding `config_toml`.
    pub fn start_with_config(plugins: &[&str], config_toml: &str, args: &[&str]) -> Result<Host> {
        let dir = TempDir::new("config");
        let file = dir.path().join("rohrpost.toml");
        std::fs::write(&file, config_toml)?;
        let file = file.to_string_lossy().into_owned();
        let mut all = vec!["--config", file.as_str()];
        all.extend_from_slice(args);
        let mut host = Self::start_with(plugins, &all)?;
        host._config = Some(dir);
        Ok(host)
    }

    /// `POST /api/notify` with this bearer token (none: no header).
    pub async fn notify(&self, token: Option<&str>, body: &str) -> Result<(u16, Value)> {
        post(&self.addr, "/api/notify", token, body).await
    }

    /// The WebSocket URL of the rohrpost endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}/ws/rohrpost/", self.addr)
    }

    /// Opens a client connection.
    pub async fn connect(&self) -> Result<Client> {
        Client::connect(&self.url()).await
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The processes the host started that still run (its plugins'
    /// workers), from `/proc/<pid>/task/*/children`.
    pub fn children(&self) -> std::collections::BTreeSet<u32> {
        rohrpost_harness::children(self.pid())
    }

    /// The host's log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.process.log()
    }

    /// Waits until a log line contains every one of `parts`.
    pub async fn wait_for_log(&self, parts: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .log()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!(
                    "no log line with {parts:?}; log:\n{}",
                    self.log().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The host's open sockets, counted on its side (`/proc/<pid>/fd`): a
    /// client's view can be wrong when the kernel's accept queue overflowed
    /// during a burst (the client believes it is connected, the server
    /// never saw the socket).
    pub fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// A `kB` field of the process's `/proc/<pid>/status`, such as `VmRSS`
    /// or `VmHWM` (the peak), in bytes.
    pub fn memory(&self, field: &str) -> Result<u64> {
        Ok(rohrpost_harness::status_kib(self.pid(), field)? * 1024)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Sends the process a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        if let Err(error) = self.process.signal(signal) {
            panic!("{error}");
        }
    }

    /// Waits for the process to exit; its exit code.
    pub async fn exit_code(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_exit()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("the host did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl rohrpost_harness::Pid for Host {
    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A frame as a client writes it, for tests that speak WebSocket byte by
/// byte: `first` is the first byte (FIN, RSV bits, opcode); masked with a
/// fixed key when `masked` (a client must mask; a test may not).
pub fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut bytes = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => bytes.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        bytes.extend_from_slice(&key);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// A minimal HTTP/1.1 GET: the status and the body.
pub async fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP response: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// The host's `/metrics` lines of the metric `name`: each series (its
/// name and labels, as written) with its value.
pub async fn metric_series(addr: &str, name: &str) -> Result<Vec<(String, f64)>> {
    let (status, text) = get(addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "GET /metrics: {status}");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// The value of one series of `/metrics` (`name{labels}` exactly as the
/// host writes it); 0 while it is not there.
pub async fn metric_value(addr: &str, series: &str) -> Result<f64> {
    let name = series.split('{').next().unwrap_or(series);
    Ok(metric_series(addr, name)
        .await?
        .into_iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| v))
}

/// Waits until the series `series` of `/metrics` is `value`.
pub async fn wait_for_metric(
    addr: &str,
    series: &str,
    value: f64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = metric_value(addr, series).await?;
        if now == value {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{series} is {now}, not {value}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The series of `rohrpost_plugin_counts_total` for what `plugin` counted
/// (plugin-api's `host::count(event, kind)`).
pub fn plugin_count(plugin: &str, event: &str, kind: &str) -> String {
    format!(r#"rohrpost_plugin_counts_total{{plugin="{plugin}",event="{event}",kind="{kind}"}}"#)
}

/// A minimal HTTP/1.1 POST of a JSON body; returns the status and the body
/// parsed as JSON (`null` when it is not JSON).
pub async fn post(addr: &str, path: &str, token: Option<&str>, body: &str) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP response: {text}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Raises this process's open-file limit (inherited by hosts started later)
/// to its hard limit; fails when that is lower than `needed`.
pub fn raise_fd_limit(needed: u64) -> Result<()> {
    Ok(rohrpost_harness::ensure_open_files(needed)?)
}

/// Opens `n` client connections, a batch at a time (the listen backlog is
/// finite).
pub async fn connect_many(host: &Host, n: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let batch = (n - clients.len()).min(100);
        let opened = futures_util::future::try_join_all((0..batch).map(|_| host.connect())).await?;
        clients.extend(opened);
    }
    Ok(clients)
}

/// A WebSocket client speaking to the host.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What arrived from the server.
#[derive(Debug, PartialEq)]
pub enum Received {
    Text(String),
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Gone,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client> {
        let (ws, _) = connect_async(url).await.context("WebSocket connect")?;
        Ok(Client { ws })
    }

    /// Connects with these extra handshake headers.
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Client> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?,
                value.parse()?,
            );
        }
        let (ws, _) = connect_async(request).await.context("WebSocket connect")?;
        Ok(Client { ws })
    }

    /// Connects to `addr` (`host:port`) from the local address `source`
    /// (any 127.x.y.z works on loopback), with an `Origin` header if given.
    /// An `Err` carries the HTTP status of a refused handshake.
    pub async fn connect_from(
        addr: &str,
        source: std::net::IpAddr,
        origin: Option<&str>,
    ) -> Result<Client> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let target: std::net::SocketAddr = addr.parse().context("an address")?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        let stream = socket.connect(target).await.context("TCP connect")?;
        let mut request = format!("ws://{addr}/ws/rohrpost/").into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse()?);
        }
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .map_err(|error| match error {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    anyhow!("refused with {}", response.status().as_u16())
                }
                other => anyhow!("WebSocket connect: {other}"),
            })?;
        Ok(Client { ws })
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) -> Result<()> {
        self.ws.send(Message::binary(bytes.to_vec())).await?;
        Ok(())
    }

    /// The next text frame or close, skipping pings and pongs.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("nothing received within {timeout:?}"))?;
            return Ok(match next {
                Some(Ok(Message::Text(t))) => Received::Text(t.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    Received::Close(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(Message::Binary(b))) => bail!("unexpected binary frame {b:?}"),
                Some(Ok(Message::Ping(_))) => {
                    self.ws.flush().await?;
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Received::Gone,
            });
        }
    }

    /// The next message, parsed as JSON.
    pub async fn recv_json(&mut self, timeout: Duration) -> Result<Value> {
        match self.recv(timeout).await? {
            Received::Text(t) => serde_json::from_str(&t).with_context(|| format!("not JSON: {t}")),
            other => bail!("expected a text frame, got {other:?}"),
        }
    }

    /// Sends a request and returns the first reply.
    pub async fn request(&mut self, text: &str) -> Result<Value> {
        self.send_text(text).await?;
        self.recv_json(Duration::from_secs(10)).await
    }

    /// Checks that no message arrives for `period` (WebSocket pings and
    /// pongs are answered and ignored).
    pub async fn expect_silence(&mut self, period: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + period;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(()),
                // The WebSocket layer queued the pong; send it, as a
                // browser would.
                Ok(Some(Ok(Message::Ping(_)))) => self.ws.flush().await?,
                Ok(Some(Ok(Message::Pong(_)))) => {}
                Ok(other) => bail!("expected silence, got {other:?}"),
            }
        }
    }

    /// Joins `group` through the test plugin's `join` handler.
    pub async fn join(&mut self, group: &str) -> Result<()> {
        let request = serde_json::json!({"id": "j", "type": "join", "data": {"group": group}});
        let reply = self.request(&request.to_string()).await?;
        if reply != serde_json::json!({"id": "j", "type": "join", "data": {"group": group}}) {
            bail!("unexpected reply to join: {reply}");
        }
        Ok(())
    }

    /// Sends a ping request and checks the pong.
    pub async fn ping_ok(&mut self, id: u64) -> Result<()> {
        let reply = self
            .request(&format!(r#"{{"id":{id},"type":"ping"}}"#))
            .await?;
        if reply != serde_json::json!({"id": id, "type": "pong"}) {
            bail!("unexpected reply to ping: {reply}");
        }
        Ok(())
    }

    /// Starts the closing handshake with `code`; the server's close
    /// frame is then read with [`Client::recv`].
    pub async fn close_with(&mut self, code: u16) -> Result<()> {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
            .await?;
        Ok(())
    }
}

/// Parses JSON text that the test itself wrote.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON in test: {e}: {text}"))
}
