//! A `redis-server` of a test's own, on a free port, for the tests that
//! must stop, pause or restart Redis (the shared one on 6379 is never
//! touched).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A running `redis-server`. Dropping it continues a paused server, then
/// kills it and waits for it, on every way out of a test.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

/// A name for keys and channels no other test uses on the shared Redis:
/// `label`, this process and a counter.
pub fn unique_prefix(label: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A port nobody listens on now (never the shared Redis's).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        if port != 6379 {
            return port;
        }
    }
}

/// Whether a Redis server answers `PING` at `addr` within a second.
pub async fn redis_answers(addr: &str) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
    else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await,
        Ok(Ok(_))
    ) && &reply == b"+PONG\r\n"
}

impl OwnRedis {
    /// Starts a server on `port` and waits until it answers.
    pub async fn start(port: u16) -> OwnRedis {
        assert_ne!(port, 6379, "never the shared Redis");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        let redis = OwnRedis {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_answers(&redis.addr()).await {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis
    }

    /// Starts `redis-server` with `args` (after the bind and persistence
    /// ones) for a server on `port`, and waits until `ready` says it
    /// answers.
    pub async fn start_with(port: u16, args: &[&str], ready: impl Fn() -> bool) -> OwnRedis {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(args);
        Self::spawn(port, &mut command, "redis-server", ready).await
    }

    /// Starts a server that speaks TLS only, on `port`, with the server
    /// certificate of `tls`, and waits until it answers.
    pub async fn start_tls(port: u16, tls: &crate::tls::TestTls) -> OwnRedis {
        Self::start_tls_with(port, tls, &[]).await
    }

    /// Starts a server that speaks TLS only, as [`OwnRedis::start_tls`],
    /// with `more` arguments (e.g. `--requirepass`), and waits until it
    /// answers (an error such as `NOAUTH` is an answer).
    pub async fn start_tls_with(port: u16, tls: &crate::tls::TestTls, more: &[&str]) -> OwnRedis {
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let (cert, key, ca) = (
            path(&tls.server_cert),
            path(&tls.server_key),
            path(&tls.ca_cert),
        );
        let tls_port = port.to_string();
        let args = [
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ];
        let args: Vec<&str> = args.iter().chain(more).copied().collect();
        Self::start_with(port, &args, || !tls_cli(port, &ca, &["PING"]).is_empty()).await
    }

    /// Starts a Redis Sentinel on `port` from `config` (a file Sentinel may
    /// rewrite, in a directory of the test's own, that sets the port), and
    /// waits until `ready` says it answers.
    pub async fn start_sentinel(
        port: u16,
        config: &std::path::Path,
        ready: impl Fn() -> bool,
    ) -> OwnRedis {
        let mut command = Command::new("redis-server");
        command.arg(config).arg("--sentinel");
        Self::spawn(port, &mut command, "redis-sentinel", ready).await
    }

    /// Runs `command` (a `redis-server` for `port`, its output dropped),
    /// and waits until `ready` says it answers.
    async fn spawn(
        port: u16,
        command: &mut Command,
        what: &str,
        ready: impl Fn() -> bool,
    ) -> OwnRedis {
        assert_ne!(port, 6379, "never the shared Redis");
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        let redis = OwnRedis {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(Instant::now() < deadline, "{what} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (a later `start` on the same port restarts it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal_child(&child, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pauses the process (SIGSTOP): it keeps its sockets but answers
    /// nothing.
    pub fn stall(&self) {
        if let Some(child) = &self.child {
            self.signal_child(child, libc::SIGSTOP);
        }
    }

    /// Lets a paused server go on.
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            self.signal_child(child, libc::SIGCONT);
        }
    }

    fn signal_child(&self, child: &Child, signal: i32) {
        let pid = i32::try_from(child.id()).expect("pid fits");
        // SAFETY: a plain system call on our own child's pid.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-cli` over TLS to the server on `port`, trusting `ca`: its output,
/// trimmed (empty when it fails).
pub fn tls_cli(port: u16, ca: &str, command: &[&str]) -> String {
    Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            ca,
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(command)
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}
