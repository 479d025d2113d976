//! The workers' jail, attacked from inside: a hostile plugin
//! (`fixture-hostile`) in a default-configured worker tries what a
//! compromised plugin would (read the server's secrets and memory, trace or
//! kill it, write a trojan into the plugins or shadow directory, leave
//! processes behind, reach a port it was not granted, run a program, leave
//! its namespaces). Each attempt fails: refused by the system, or the
//! worker is ended and the log names the plugin and the call. The server
//! lives, a bystander's connection is answered throughout, and the admin
//! token still works.
//!
//! Every test runs twice when the tests run as root: with the server as
//! root (its workers become `nobody`) and with the server as `nobody`.

use std::{os::unix::process::CommandExt, time::Duration};

use rohrpost_tests::{get, Client, Host, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const CRASHED: &str = "Internal error: the plugin 'hostile' crashed.";
const TOKEN: &str = "admin-token-of-the-server-0123456789";
const NOTIFY: &str = "notify-token-of-the-server-0123456789";
const NOBODY: (u32, u32) = (65534, 65534);

/// The users the server runs as: the tests' own, and `nobody` when that
/// is root.
fn users() -> Vec<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        vec![None, Some(NOBODY)]
    } else {
        vec![None]
    }
}

/// A server with the hostile plugin (and `others`), its secrets on its
/// command line and in its environment, as an attacker would like them.
fn start(user: Option<(u32, u32)>, others: &[&str], args: &[&str]) -> Host {
    let mut plugins = vec!["fixture-hostile", "ping"];
    plugins.extend_from_slice(others);
    let mut all = vec!["--admin-token", TOKEN];
    all.extend_from_slice(args);
    Host::start_as(&plugins, &all, &[("ROHRPOST_NOTIFY_TOKEN", NOTIFY)], user).unwrap()
}

/// The reply to one attack.
async fn attack(c: &mut Client, kind: &str, data: Value) -> Value {
    let request = json!({"id": kind, "type": kind, "data": data}).to_string();
    c.request(&request).await.unwrap()
}

/// Waits until the hostile plugin serves (again): a worker ended by one
/// attack must not take the next one with it.
async fn serving(c: &mut Client) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let reply = attack(c, "whoami", json!({})).await;
        if reply["data"]["ok"] == true {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not served: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The attack was refused by the system: an answer with its error.
fn refused(reply: &Value) -> String {
    assert_eq!(reply["data"]["ok"], false, "the attack worked: {reply}");
    reply["data"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The attack ended the worker: the caller got the crash reply and the
/// log names the plugin and the forbidden call.
async fn forbidden(host: &Host, reply: &Value, call: &str) {
    assert_eq!(reply["error"], CRASHED, "{reply}");
    host.wait_for_log(
        &[
            "plugin=hostile",
            "the sandbox ended it for a forbidden system call",
            &format!(", {call} ("),
        ],
        T,
    )
    .await
    .unwrap();
}

/// One attack that the jail ends the worker for, once the plugin serves.
async fn forbidden_attack(host: &Host, c: &mut Client, kind: &str, data: Value, call: &str) {
    serving(c).await;
    let reply = attack(c, kind, data).await;
    forbidden(host, &reply, call).await;
}

/// The server is whole: the bystander is answered, the real admin token
/// (and only it) opens the admin API.
async fn server_is_whole(host: &Host, bystander: &mut Client, id: u64) {
    bystander.ping_ok(id).await.unwrap();
    let with = |token: &str| {
        let url = format!("http://{}/api/plugins", host.addr);
        let token = token.to_owned();
        async move {
            let response = reqwest_status(&url, &token).await;
            response
        }
    };
    assert_eq!(with(TOKEN).await, 200);
    assert_eq!(with("attacker").await, 401);
}

/// The status of a GET with a bearer token.
async fn reqwest_status(url: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_servers_secrets_memory_and_life_are_out_of_reach() {
    for user in users() {
        let host = start(user, &[], &[]);
        let pid = host.pid();
        let mut bystander = host.connect().await.unwrap();
        let mut c = host.connect().await.unwrap();
        for file in ["cmdline", "environ", "maps", "status"] {
            let reply = attack(
                &mut c,
                "read-file",
                json!({"path": format!("/proc/{pid}/{file}")}),
            )
            .await;
            let error = refused(&reply);
            assert!(!reply.to_string().contains(TOKEN), "{reply}");
            assert!(error.contains("denied"), "{file}: {error}");
        }
        let reply = attack(
            &mut c,
            "list-dir",
            json!({"path": format!("/proc/{pid}/fd")}),
        )
        .await;
        refused(&reply);
        let reply = attack(&mut c, "open-mem", json!({"pid": pid})).await;
        refused(&reply);
        // The worker's own environment holds none of the server's.
        let reply = attack(&mut c, "read-file", json!({"path": "/proc/self/environ"})).await;
        assert!(!reply.to_string().contains(NOTIFY), "{reply}");
        if let Some((uid, gid)) = user {
            // Nor can any other process of the server's user: the server
            // is not dumpable.
            let read = std::process::Command::new("/bin/cat")
                .arg(format!("/proc/{pid}/environ"))
                .uid(uid)
                .gid(gid)
                .output()
                .unwrap();
            assert!(!read.status.success(), "{read:?}");
            assert!(!String::from_utf8_lossy(&read.stdout).contains(NOTIFY));
        }
        server_is_whole(&host, &mut bystander, 1).await;
        for (kind, data, call) in [
            ("ptrace", json!({"pid": pid}), "ptrace"),
            ("vm-read", json!({"pid": pid}), "process_vm_readv"),
            ("kill", json!({"pid": pid, "signal": libc::SIGKILL}), "kill"),
            ("set-owner", json!({"pid": pid}), "fcntl"),
        ] {
            forbidden_attack(&host, &mut c, kind, data, call).await;
            server_is_whole(&host, &mut bystander, 2).await;
        }
    }
}

#[tokio::test]
async fn no_file_can_be_written_and_the_shadow_copies_are_out_of_sight() {
    for user in users() {
        let host = start(user, &[], &[]);
        let mut bystander = host.connect().await.unwrap();
        let mut c = host.connect().await.unwrap();
        let shadow = host
            .wait_for_log(&["plugin copies go to a private directory"], T)
            .await
            .unwrap();
        let shadow = shadow
            .split("dir=")
            .nth(1)
            .map(|d| d.trim().to_owned())
            .unwrap();
        let _ = std::fs::remove_file("/tmp/rohrpost-trojan");
        let plugins = host.plugins.path().to_owned();
        for path in [
            plugins.join("libping.so"),
            plugins.join("libtrojan.so"),
            std::path::Path::new(&shadow).join("trojan.so"),
            "/tmp/rohrpost-trojan".into(),
        ] {
            let reply = attack(
                &mut c,
                "write-file",
                json!({"path": path, "text": "\u{7f}ELF trojan"}),
            )
            .await;
            let error = refused(&reply);
            assert!(error.contains("denied"), "{}: {error}", path.display());
        }
        assert!(!std::path::Path::new("/tmp/rohrpost-trojan").exists());
        let reply = attack(&mut c, "list-dir", json!({"path": shadow})).await;
        refused(&reply);
        // The worker's own mappings name a sealed copy in memory, not the
        // shadow directory.
        let reply = attack(&mut c, "read-file", json!({"path": "/proc/self/maps"})).await;
        let maps = reply["data"]["got"].as_str().unwrap_or_default();
        assert!(maps.contains("memfd:libfixture_hostile.so"), "{reply}");
        assert!(!maps.contains("rohrpost-shadow"), "{maps}");
        // Nothing beyond the system's libraries can be read.
        for path in ["/etc/passwd", "/root", "/home"] {
            let reply = attack(&mut c, "read-file", json!({"path": path})).await;
            refused(&reply);
        }
        server_is_whole(&host, &mut bystander, 1).await;
    }
}

#[tokio::test]
async fn what_a_plugin_forks_ends_with_its_worker_even_in_a_session_of_its_own() {
    for user in users() {
        let host = start(user, &["fixture-faults"], &[]);
        let mut bystander = host.connect().await.unwrap();
        let mut c = host.connect().await.unwrap();
        let reply = c
            .request(r#"{"id":1,"type":"fork","data":{"count":5,"setsid":true}}"#)
            .await
            .unwrap();
        let pids = rohrpost_tests::forked_pids(&reply);
        assert_eq!(pids.len(), 5, "{reply}");
        assert!(
            pids.iter().all(|&pid| rohrpost_harness::is_running(pid)),
            "{pids:?}"
        );
        let reply = c.request(r#"{"id":2,"type":"segfault"}"#).await.unwrap();
        assert_eq!(
            reply["error"], "Internal error: the plugin 'faults' crashed.",
            "{reply}"
        );
        rohrpost_tests::wait_until_ended(&pids, T).await;
        bystander.ping_ok(3).await.unwrap();
    }
}

#[tokio::test]
async fn programs_namespaces_listeners_and_sigsys_handlers_are_forbidden() {
    for user in users() {
        let host = start(user, &[], &[]);
        let mut bystander = host.connect().await.unwrap();
        let mut c = host.connect().await.unwrap();
        let reply = attack(&mut c, "exec", json!({"path": "/bin/sh"})).await;
        let error = refused(&reply);
        assert!(error.contains("denied"), "{error}");
        for (kind, data, call) in [
            ("syscall", json!({"nr": libc::SYS_unshare}), "unshare"),
            ("syscall", json!({"nr": libc::SYS_mount}), "mount"),
            ("syscall", json!({"nr": libc::SYS_bpf}), "bpf"),
            ("syscall", json!({"nr": libc::SYS_keyctl}), "keyctl"),
            ("listen", json!({"port": 0}), "bind"),
        ] {
            forbidden_attack(&host, &mut c, kind, data, call).await;
        }
        // Ignoring SIGSYS does not let a forbidden call through: it kills.
        serving(&mut c).await;
        let reply = attack(&mut c, "catch-sigsys", json!({})).await;
        assert_eq!(reply["data"]["ok"], true, "{reply}");
        let reply = attack(&mut c, "syscall", json!({"nr": libc::SYS_unshare})).await;
        assert_eq!(reply["error"], CRASHED, "{reply}");
        host.wait_for_log(&["plugin=hostile", "SIGSYS"], T)
            .await
            .unwrap();
        server_is_whole(&host, &mut bystander, 1).await;
        // The worker runs with no privilege at all, as nobody.
        serving(&mut c).await;
        let reply = attack(&mut c, "whoami", json!({})).await;
        let got = &reply["data"]["got"];
        assert_eq!(got["cap_eff"], "0000000000000000", "{reply}");
        assert_eq!(got["no_new_privs"], "1", "{reply}");
        assert_eq!(got["seccomp"], "2", "{reply}");
        assert_eq!(got["uid"], 65534, "{reply}");
    }
}

/// A TCP listener on a free port of 127.0.0.1 that accepts forever.
async fn listener() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    port
}

#[tokio::test]
async fn only_the_ports_the_plugins_table_grants_can_be_reached() {
    let granted = listener().await;
    let other = listener().await;
    for user in users() {
        // No grant: a network of its own, with nothing in it.
        let host = start(user, &[], &[]);
        let mut c = host.connect().await.unwrap();
        refused(&attack(&mut c, "connect", json!({"port": granted})).await);
        drop(host);
        let config = TempDir::new("sandbox-config");
        std::fs::set_permissions(
            config.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let file = config.path().join("rohrpost.toml");
        std::fs::write(
            &file,
            format!(
                "[plugins.hostile]\nlibrary = \"libfixture_hostile.so\"\n\
                 [plugins.hostile.sandbox]\nconnect_ports = [{granted}]\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let file = file.to_string_lossy().into_owned();
        let host = start(user, &[], &["--config", &file]);
        let mut bystander = host.connect().await.unwrap();
        let mut c = host.connect().await.unwrap();
        let reply = attack(&mut c, "connect", json!({"port": granted})).await;
        assert_eq!(reply["data"]["ok"], true, "the granted port: {reply}");
        let error = refused(&attack(&mut c, "connect", json!({"port": other})).await);
        assert!(error.contains("denied"), "{error}");
        // Nor a Unix socket, which no port rule covers.
        let reply = attack(
            &mut c,
            "connect-unix",
            json!({"path": "/var/run/redis/redis.sock"}),
        )
        .await;
        refused(&reply);
        server_is_whole(&host, &mut bystander, 1).await;
    }
}

#[tokio::test]
async fn a_reply_of_more_than_64_mib_ends_the_worker_before_the_server_holds_it() {
    let host = start(None, &[], &[]);
    let mut bystander = host.connect().await.unwrap();
    let mut c = host.connect().await.unwrap();
    let before = host.memory("VmRSS").unwrap();
    let reply = attack(&mut c, "big-frame", json!({"mb": 200})).await;
    assert_eq!(reply["error"], CRASHED, "{reply}");
    host.wait_for_log(
        &[
            "plugin=hostile",
            "breaking the channel",
            "more than the limit",
        ],
        T,
    )
    .await
    .unwrap();
    let grown = host.memory("VmHWM").unwrap().saturating_sub(before);
    assert!(grown < 64 << 20, "the server grew by {grown} bytes");
    server_is_whole(&host, &mut bystander, 1).await;
}

#[tokio::test]
async fn garbage_in_the_replies_ring_ends_the_worker_and_nothing_else() {
    let host = start(None, &[], &[]);
    let mut bystander = host.connect().await.unwrap();
    let mut c = host.connect().await.unwrap();
    serving(&mut c).await;
    // Its own reply may get through before the server looks again.
    let reply = attack(&mut c, "ring-garbage", json!({})).await;
    assert!(
        reply["error"] == CRASHED || reply["data"]["ok"] == true,
        "{reply}"
    );
    host.wait_for_log(
        &[
            "plugin=hostile",
            "breaking the channel",
            "the replies' ring says more was written than it holds",
        ],
        T,
    )
    .await
    .unwrap();
    serving(&mut c).await;
    server_is_whole(&host, &mut bystander, 1).await;
}

#[tokio::test]
async fn the_jail_is_logged_and_required_starts_where_the_kernel_has_it_all() {
    let host = start(None, &[], &["--sandbox", "required"]);
    host.wait_for_log(&["plugin workers are jailed"], T)
        .await
        .unwrap();
    let mut c = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
    let reply = attack(&mut c, "whoami", json!({})).await;
    assert_eq!(reply["data"]["got"]["seccomp"], "2", "{reply}");
    // Off: a fault boundary only, and the log says so.
    let host = start(None, &[], &["--sandbox", "off"]);
    host.wait_for_log(&["sandbox = \"off\""], T).await.unwrap();
    let mut c = host.connect().await.unwrap();
    let reply = attack(&mut c, "whoami", json!({})).await;
    assert_eq!(reply["data"]["got"]["seccomp"], "0", "{reply}");
    let (status, _) = get(&host.addr, "/healthz").await.unwrap();
    assert_eq!(status, 200);
}

/// A script that runs the host in a user namespace of its own (root
/// mapped to the tests' user) that may not make another: the system of an
/// operator whose kernel or container refuses the workers' user
/// namespaces.
fn without_user_namespaces(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("rohrpost-without-userns");
    let host = rohrpost_tests::build().host();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec unshare --user --map-root-user sh -c \
             'echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" \"$@\"' {} \"$@\"\n",
            host.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn a_missing_layer_is_warned_about_and_required_refuses_to_start() {
    assert!(
        std::path::Path::new("/usr/bin/unshare").exists(),
        "this test needs util-linux's unshare"
    );
    let dir = TempDir::new("no-userns");
    let script = without_user_namespaces(dir.path());
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let built = rohrpost_tests::build();
    rohrpost_tests::install(&built.plugin("ping"), &plugins, "libping.so");
    // Required: no start, and the reason names the layer.
    let out = std::process::Command::new(&script)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--sandbox",
            "required",
            "--plugins",
        ])
        .arg(&plugins)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("lacks") && stderr.contains("user namespaces"),
        "{stderr}"
    );
    // Best effort: a loud warning naming it, and the plugin serves, still
    // under Landlock and seccomp.
    let mut child = std::process::Command::new(&script)
        .args(["--listen", "127.0.0.1:0", "--plugins"])
        .arg(&plugins)
        .env("TMPDIR", dir.path())
        .env("ROHRPOST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let done = line.contains("plugin loaded");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let deadline = std::time::Instant::now() + T;
    while !lines.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let seen = lines.join().unwrap().join("\n");
    assert!(seen.contains("THE PLUGIN SANDBOX IS INCOMPLETE"), "{seen}");
    assert!(seen.contains("user namespaces"), "{seen}");
    assert!(
        seen.contains("plugin loaded") && seen.contains("plugin=ping"),
        "{seen}"
    );
}
