//! Redis servers of their own for the tests and the benchmarks: one
//! `redis-server`, or a Redis Cluster of several masters made of them, on
//! free ports (never the shared Redis on 6379), in a private temp dir,
//! killed on drop. A cluster node can be killed and started again on the
//! same port and directory, where it rejoins from its `nodes.conf`.
//!
//! A cluster may speak TLS only ([`TlsFiles`]): clients, replication and
//! the cluster bus alike, on the same ports as without TLS.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Error, Result, TempDir};

/// How long a server or the cluster may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// A cluster node's bus port is its port plus this.
const BUS_OFFSET: u16 = 10_000;
const SHARED_REDIS: u16 = 6379;

/// Whether nothing listens on `port` of 127.0.0.1 now.
fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port whose cluster bus port (plus [`BUS_OFFSET`]) is free too,
/// neither of them the shared Redis's.
pub fn free_cluster_port() -> u16 {
    loop {
        let Ok(port) = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
        else {
            continue;
        };
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if port != SHARED_REDIS && bus != SHARED_REDIS && port_free(bus) {
            return port;
        }
    }
}

/// The certificate and key of TLS-only servers, and the CA that signed
/// them, which clients trust. The certificate names 127.0.0.1 (an IP
/// address SAN) and is for clients too (`clientAuth`): cluster nodes
/// present it to each other on the cluster bus.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// `redis-cli`'s arguments to speak TLS to these servers, with the
    /// certificate as the client's too, for servers that ask for one.
    fn cli_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            path(&self.ca),
            "--cert".to_owned(),
            path(&self.cert),
            "--key".to_owned(),
            path(&self.key),
        ]
    }
}

/// `redis-cli -p port command...`: its output, trimmed (empty when it
/// cannot run).
pub fn redis_cli(port: u16, command: &[&str]) -> String {
    redis_cli_with(None, port, command)
}

/// The same, over TLS with `tls`, when given.
pub fn redis_cli_with(tls: Option<&TlsFiles>, port: u16, command: &[&str]) -> String {
    Command::new("redis-cli")
        .args(tls.map(TlsFiles::cli_args).unwrap_or_default())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(command)
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Polls `ready` until it holds, for [`READY_TIMEOUT`] at most.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready() {
        if Instant::now() > deadline {
            return Err(Error::NotReady {
                what: what.to_owned(),
                timeout: READY_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One `redis-server` process.
pub struct RedisServer {
    port: u16,
    args: Vec<String>,
    tls: Option<TlsFiles>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a plain server on a free port and waits until it answers.
    pub fn start() -> Result<RedisServer> {
        Self::start_with(free_cluster_port(), Vec::new(), None)
    }

    fn start_with(port: u16, args: Vec<String>, tls: Option<TlsFiles>) -> Result<RedisServer> {
        let mut server = RedisServer {
            port,
            args,
            tls,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let port = self.port.to_string();
        let ports = match &self.tls {
            None => vec!["--port".to_owned(), port],
            Some(tls) => {
                let path = |p: &PathBuf| p.to_string_lossy().into_owned();
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-cert-file",
                    &path(&tls.cert),
                    "--tls-key-file",
                    &path(&tls.key),
                    "--tls-ca-cert-file",
                    &path(&tls.ca),
                    "--tls-auth-clients",
                    "no",
                ]
                .map(str::to_owned)
                .to_vec()
            }
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| Error::Spawn {
                name: "redis-server (Debian's redis-server package)".to_owned(),
                error,
            })?;
        self.child = Some(child);
        let port = self.port;
        wait_for(&format!("redis-server on port {port}"), || {
            self.cli(&["PING"]) == "PONG"
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis-cli command...` to this server, over TLS if it speaks it.
    pub fn cli(&self, command: &[&str]) -> String {
        redis_cli_with(self.tls.as_ref(), self.port, command)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters without replicas, each slot on one of them.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    tls: Option<TlsFiles>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers, makes them a cluster with
    /// `redis-cli --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<RedisCluster> {
        Self::start_with_replicas(masters, 0)
    }

    /// The same with `replicas` replicas of each master (which takes over
    /// when its master fails, after the node timeout of 3 s).
    pub fn start_with_replicas(masters: usize, replicas: usize) -> Result<RedisCluster> {
        Self::start_all(masters, replicas, None)
    }

    /// `masters` masters that speak TLS only, with `tls`: to clients, to
    /// their replicas and to each other on the cluster bus
    /// (`tls-cluster yes`, so that they announce their TLS ports).
    pub fn start_tls(masters: usize, tls: TlsFiles) -> Result<RedisCluster> {
        Self::start_all(masters, 0, Some(tls))
    }

    fn start_all(masters: usize, replicas: usize, tls: Option<TlsFiles>) -> Result<RedisCluster> {
        let dir = TempDir::new("redis-cluster")?;
        let count = masters * (1 + replicas);
        let mut nodes: Vec<RedisServer> = Vec::with_capacity(count);
        for index in 0..count {
            let node_dir = dir.subdir(&format!("node-{index}"))?;
            let mut port = free_cluster_port();
            while nodes.iter().any(|n| {
                n.port == port || n.port + BUS_OFFSET == port || port + BUS_OFFSET == n.port
            }) {
                port = free_cluster_port();
            }
            let tls_args: &[&str] = if tls.is_some() {
                &["--tls-cluster", "yes", "--tls-replication", "yes"]
            } else {
                &[]
            };
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "3000",
            ]
            .iter()
            .chain(tls_args)
            .chain(&["--dir"])
            .map(|s| (*s).to_owned())
            .chain([node_dir.to_string_lossy().into_owned()])
            .collect();
            nodes.push(RedisServer::start_with(port, args, tls.clone())?);
        }
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let out = Command::new("redis-cli")
            .args(tls.as_ref().map(TlsFiles::cli_args).unwrap_or_default())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .map_err(|error| Error::Spawn {
                name: "redis-cli".to_owned(),
                error,
            })?;
        if !out.status.success() {
            return Err(Error::Failed {
                name: "redis-cli --cluster create".to_owned(),
                status: out.status,
                output: String::from_utf8_lossy(&out.stdout).into_owned(),
            });
        }
        let cluster = RedisCluster {
            nodes,
            tls,
            _dir: dir,
        };
        cluster.wait_ok()?;
        // A replica that never synced with its master does not take over
        // from it.
        for node in &cluster.nodes {
            let port = node.port;
            wait_for(
                &format!("a synced replica or a master on port {port}"),
                || {
                    let info = node.cli(&["INFO", "replication"]);
                    info.contains("role:master") || info.contains("master_link_status:up")
                },
            )?;
        }
        Ok(cluster)
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self) -> Result<()> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let port = node.port;
            wait_for(&format!("cluster_state:ok on port {port}"), || {
                node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })?;
        }
        Ok(())
    }

    /// The nodes' ports, in the order they were started.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The groups URL of the host: `redis+cluster://` with every node
    /// (`rediss+cluster://` over TLS).
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(RedisServer::addr).collect();
        let scheme = match self.tls {
            Some(_) => "rediss+cluster",
            None => "redis+cluster",
        };
        format!("{scheme}://{}/", addrs.join(","))
    }

    /// `redis-cli command...` to the node on `port`, over TLS if the
    /// cluster speaks it.
    pub fn cli(&self, port: u16, command: &[&str]) -> String {
        redis_cli_with(self.tls.as_ref(), port, command)
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(RedisServer::pid).collect()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> Option<u16> {
        let node = self.nodes.iter().find(|n| n.child.is_some())?;
        node.cli(&["CLUSTER", "KEYSLOT", key]).parse().ok()
    }

    /// The port of the master that owns `key`'s slot.
    pub fn owner_of(&self, key: &str) -> Option<u16> {
        self.owner_of_slot(self.slot_of(key)?)
    }

    /// The port of the master that owns `slot`, as the first node that
    /// answers sees it (`CLUSTER NODES`: id, address, flags, master, ping,
    /// pong, epoch, link state, then the slots, as `a-b` or `a`).
    pub fn owner_of_slot(&self, slot: u16) -> Option<u16> {
        let node = self.nodes.iter().find(|n| n.child.is_some())?;
        let nodes = node.cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.contains("master") {
                continue;
            }
            let owns = fields.iter().skip(8).any(|range| {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                matches!(
                    (start.parse::<u16>(), end.parse::<u16>()),
                    (Ok(start), Ok(end)) if (start..=end).contains(&slot)
                )
            });
            if owns {
                let addr = addr.split('@').next().unwrap_or(addr);
                return addr.rsplit(':').next()?.parse().ok();
            }
        }
        None
    }

    /// Moves `slot` (holding no keys) to the master on `to`, as a
    /// resharding does: importing on `to`, migrating on its owner, then
    /// every master told its new node.
    pub fn move_slot(&self, slot: u16, to: u16) -> Result<()> {
        let from = self.owner_of_slot(slot).ok_or_else(|| Error::NotReady {
            what: format!("an owner of slot {slot}"),
            timeout: Duration::ZERO,
        })?;
        let slot = slot.to_string();
        let (from_id, to_id) = (
            self.cli(from, &["CLUSTER", "MYID"]),
            self.cli(to, &["CLUSTER", "MYID"]),
        );
        let mut steps = vec![
            (to, vec!["IMPORTING", from_id.as_str()]),
            (from, vec!["MIGRATING", to_id.as_str()]),
            (to, vec!["NODE", to_id.as_str()]),
            (from, vec!["NODE", to_id.as_str()]),
        ];
        for node in self.nodes.iter().filter(|n| n.port != to && n.port != from) {
            steps.push((node.port, vec!["NODE", to_id.as_str()]));
        }
        for (port, step) in steps {
            let mut command = vec!["CLUSTER", "SETSLOT", slot.as_str()];
            command.extend(step);
            let out = self.cli(port, &command);
            if out != "OK" {
                return Err(Error::NotReady {
                    what: format!("{} on port {port} answered {out:?}", command.join(" ")),
                    timeout: Duration::ZERO,
                });
            }
        }
        Ok(())
    }

    /// The index of the node on `port`.
    pub fn index_of(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// Kills node `index` (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index) {
            node.kill();
        }
    }

    /// Starts node `index` again on its port and directory, and waits until
    /// it answers (it rejoins the cluster from its `nodes.conf`).
    pub fn restart(&mut self, index: usize) -> Result<()> {
        if let Some(node) = self.nodes.get_mut(index) {
            node.kill();
            node.spawn()?;
        }
        Ok(())
    }
}
