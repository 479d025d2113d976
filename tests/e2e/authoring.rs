//! Writing plugins: a plugin crate outside the workspace, the scaffold, the dev loop.
//!
//! Every crate here lives in a temporary directory, depends on plugin-api by
//! path and builds into `target/external`, so the dependencies compile once
//! for all of them.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rohrpost_tests::{install, workspace, Client, Host, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// A first build compiles plugin-api and its dependencies: minutes on a
/// small machine.
const FIRST_BUILD: Duration = Duration::from_secs(900);

/// From saving a change to the new reply (a release build of a small crate).
const REBUILD: Duration = Duration::from_secs(120);

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Where the crates built outside the workspace put their artifacts.
fn external_target() -> PathBuf {
    rohrpost_tests::target_dir().join("external")
}

/// Builds the crate in `dir` (debug) and returns its library.
fn build_crate(dir: &Path, crate_name: &str) -> PathBuf {
    let target = external_target();
    let status = cargo()
        .current_dir(dir)
        .args(["build", "--quiet", "--target-dir"])
        .arg(&target)
        .status()
        .expect("cannot run cargo build");
    assert!(status.success(), "cargo build in {} failed", dir.display());
    target
        .join("debug")
        .join(rohrpost_tests::library_file_name(crate_name))
}

/// `cargo xtask ARGS...`, run from the workspace root.
fn xtask() -> Command {
    let mut cmd = cargo();
    cmd.current_dir(workspace())
        .args(["run", "--quiet", "--package", "xtask", "--"]);
    cmd
}

/// `cargo xtask new-plugin NAME --dir DIR`; fails the test unless it
/// succeeds, and returns what it printed.
fn scaffold(name: &str, dir: &Path) -> String {
    let out = xtask()
        .args(["new-plugin", name, "--dir"])
        .arg(dir)
        .output()
        .expect("cannot run cargo xtask");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "new-plugin failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const EXTERNAL_CARGO_TOML: &str = r#"[package]
name = "external"
version = "0.3.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
rohrpost-plugin-api = { path = "PLUGIN_API" }

[workspace]
"#;

const EXTERNAL_LIB_RS: &str = r#"
use std::sync::OnceLock;

use rohrpost_plugin_api::prelude::*;

static GREETING: OnceLock<String> = OnceLock::new();

fn configure(settings: Value) -> HandlerResult {
    let greeting = settings.get("greeting").and_then(Value::as_str).unwrap_or("Hello");
    GREETING.set(greeting.to_owned()).map_err(|_| "configured twice")?;
    Ok(())
}

/// Two types, one handler: a data reply, an error reply, a returned error.
fn greet(req: &Request, conn: &mut Connection) -> HandlerResult {
    let Some(name) = req.data().and_then(|d| d.get("name")).and_then(Value::as_str) else {
        conn.reply_error(req, "data.name is required");
        return Ok(());
    };
    if name.is_empty() {
        return Err("an empty name".into());
    }
    let greeting = GREETING.get().map_or("Hello", String::as_str);
    let text = format!("{greeting}, {name}!");
    conn.reply(req, json!({ "text": text }));
    Ok(())
}

/// The caller, from the connection's scope; the answer is the return value.
fn whoami(req: &Request) -> Result<Value, Refusal> {
    let scope = req.scope();
    Ok(json!({ "path": scope.get("path"), "query": scope.get("query_string") }))
}

fn plugin() -> Plugin {
    Plugin::new("external", env!("CARGO_PKG_VERSION"))
        .with_config(configure)
        .handle(["external.greet", "external.welcome"], greet)
        .handle("external.whoami", whoami)
        .inline()
}

export_plugin!(plugin);
"#;

/// Writes the crate outside the workspace, with the workspace's lock file
/// (the dependency versions plugin-api is tested with; cargo drops the
/// entries it does not need).
fn write_external_crate(dir: &Path) {
    let api = workspace().join("plugin-api");
    let api = api.to_str().expect("a UTF-8 workspace path");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        EXTERNAL_CARGO_TOML.replace("PLUGIN_API", api),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), EXTERNAL_LIB_RS).unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

#[tokio::test]
async fn a_plugin_crate_from_outside_the_workspace_loads_and_serves() {
    let work = TempDir::new("external-crate");
    let dir = work.path().join("external");
    write_external_crate(&dir);
    let lib = build_crate(&dir, "external");

    let host =
        Host::start_with_config(&["ping"], "[plugins.external]\ngreeting = \"Howdy\"\n", &[])
            .unwrap();
    install(&lib, host.plugins.path(), "libexternal.so");
    host.wait_for_log(&["event=\"loaded\"", "plugin=external", "version=0.3.0"], T)
        .await
        .unwrap();

    let mut c = Client::connect(&format!("{}?room=7", host.url()))
        .await
        .unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"external.greet","data":{"name":"Ada"}}"#)
            .await
            .unwrap(),
        json!({"id":1,"type":"external.greet","data":{"text":"Howdy, Ada!"}})
    );
    assert_eq!(
        c.request(r#"{"id":"w","type":"external.welcome","data":{"name":"Bo"}}"#)
            .await
            .unwrap(),
        json!({"id":"w","type":"external.welcome","data":{"text":"Howdy, Bo!"}})
    );
    assert_eq!(
        c.request(r#"{"id":2,"type":"external.greet"}"#)
            .await
            .unwrap(),
        json!({"id":2,"type":"external.greet","error":"data.name is required"})
    );
    assert_eq!(
        c.request(r#"{"id":3,"type":"external.greet","data":{"name":""}}"#)
            .await
            .unwrap(),
        json!({"id":3,"type":"external.greet","error":"an empty name"})
    );
    assert_eq!(
        c.request(r#"{"id":4,"type":"external.whoami"}"#)
            .await
            .unwrap(),
        json!({"id":4,"type":"external.whoami","data":{"path":"/ws/rohrpost/","query":"room=7"}})
    );
    c.ping_ok(5).await.unwrap();
}

#[tokio::test]
async fn the_scaffold_makes_a_plugin_that_builds_and_answers_at_once() {
    let work = TempDir::new("scaffold");
    let dir = work.path().join("scaffolded");
    let stdout = scaffold("scaffolded", &dir);
    assert!(stdout.contains("cargo xtask dev"), "next steps: {stdout}");
    assert!(stdout.contains("scaffolded.hello"), "next steps: {stdout}");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("crate-type = [\"cdylib\"]"), "{manifest}");
    assert!(manifest.contains("[workspace]"), "{manifest}");

    // Bad names and existing directories are refused, and nothing is written.
    for name in ["Hello", "9lives", "a b", "fn"] {
        let out = xtask()
            .arg("new-plugin")
            .arg(name)
            .arg("--dir")
            .arg(work.path().join("bad"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "the name {name:?} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid plugin name"));
    }
    assert!(!work.path().join("bad").exists());
    // `--help` on every command answers its usage, builds and writes nothing.
    for (command, extra) in [
        ("new-plugin", &["bad-help"][..]),
        ("dev", &[][..]),
        ("install-plugins", &[][..]),
        ("bench", &[][..]),
        ("run", &[][..]),
    ] {
        let out = xtask()
            .arg(command)
            .args(extra)
            .arg("--help")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help: {out:?}");
        assert!(
            stdout.contains(&format!("usage: cargo xtask {command}")),
            "{command} --help: {stdout}"
        );
    }
    assert!(!workspace().join("plugins").join("bad-help").exists());
    let out = xtask()
        .arg("new-plugin")
        .arg("scaffolded")
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an existing directory was reused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let lib = build_crate(&dir, "scaffolded");
    let host = Host::start(&["ping"]).unwrap();
    install(&lib, host.plugins.path(), "libscaffolded.so");
    host.wait_for_log(&["event=\"loaded\"", "plugin=scaffolded"], T)
        .await
        .unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"scaffolded.hello","data":{"name":"Ada"}}"#)
            .await
            .unwrap(),
        json!({"id":1,"type":"scaffolded.hello","data":{"text":"Hello, Ada!"}})
    );
    assert_eq!(
        c.request(r#"{"id":2,"type":"scaffolded.hello"}"#)
            .await
            .unwrap(),
        json!({"id":2,"type":"scaffolded.hello","data":{"text":"Hello, world!"}})
    );
}

/// A running `cargo xtask dev`, in a process group of its own (it runs
/// cargo), ended with the group when dropped; its output so far.
struct DevLoop {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl DevLoop {
    fn start(crate_dir: &Path, plugins: &Path) -> DevLoop {
        let mut child = xtask()
            .arg("dev")
            .arg(crate_dir)
            .arg("--plugins")
            .arg(plugins)
            .arg("--target-dir")
            .arg(external_target())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("cannot run cargo xtask dev");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        Self::collect(stdout, output.clone());
        Self::collect(stderr, output.clone());
        DevLoop { child, output }
    }

    fn collect(stream: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if std::env::var_os("ROHRPOST_TEST_ECHO").is_some() {
                    eprintln!("dev: {line}");
                }
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output after byte `from` contains every one of `parts`.
    async fn wait_for(&self, from: usize, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            let new = out.get(from..).unwrap_or_default();
            if parts.iter().all(|p| new.contains(p)) {
                return new.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {parts:?} from cargo xtask dev within {timeout:?}; its output:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DevLoop {
    fn drop(&mut self) {
        let group = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: a plain system call on the process group this test started.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Asks until the reply's text is `want`; how long that took.
async fn wait_for_text(c: &mut Client, want: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        last = c
            .request(r#"{"id":1,"type":"devloop.hello","data":{"name":"Ada"}}"#)
            .await
            .unwrap();
        if last["data"]["text"] == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the reply did not become {want:?} within {timeout:?}; last reply: {last}");
}

#[tokio::test]
async fn the_dev_loop_rebuilds_and_reinstalls_on_save_and_keeps_serving_on_a_build_error() {
    let work = TempDir::new("dev-loop");
    let dir = work.path().join("devloop");
    scaffold("devloop", &dir);
    let source = dir.join("src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    assert!(original.contains("\"Hello, {name}!\""), "{original}");

    let host = Host::start(&["ping"]).unwrap();
    let dev = DevLoop::start(&dir, host.plugins.path());
    let start = Instant::now();
    host.wait_for_log(&["event=\"loaded\"", "plugin=devloop"], FIRST_BUILD)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncargo xtask dev:\n{}", dev.output()));
    eprintln!("dev loop: first build and load in {:?}", start.elapsed());
    dev.wait_for(0, &["installed devloop", "watching"], T).await;
    let mut c = host.connect().await.unwrap();
    wait_for_text(&mut c, "Hello, Ada!", T).await;

    // Save a change: the host serves the new version.
    let seen = dev.output().len();
    std::fs::write(
        &source,
        original.replace("\"Hello, {name}!\"", "\"Hi, {name}!\""),
    )
    .unwrap();
    let took = wait_for_text(&mut c, "Hi, Ada!", REBUILD).await;
    eprintln!("dev loop: save to new reply in {took:?}");
    dev.wait_for(seen, &["installed devloop ("], T).await;

    // A build error: cargo's diagnostics are shown, nothing is installed,
    // the previous version keeps answering.
    let seen = dev.output().len();
    let broken = original.replace("\"Hello, {name}!\"", "\"Hi, {name}!\"") + "\nfn broken( {\n";
    std::fs::write(&source, broken).unwrap();
    let report = dev
        .wait_for(seen, &["error", "src/lib.rs", "build failed"], REBUILD)
        .await;
    assert!(!report.contains("installed devloop"), "{report}");
    wait_for_text(&mut c, "Hi, Ada!", T).await;
    c.ping_ok(2).await.unwrap();

    // Fixed: the next good build is served.
    std::fs::write(
        &source,
        original.replace("\"Hello, {name}!\"", "\"Hey, {name}!\""),
    )
    .unwrap();
    let took = wait_for_text(&mut c, "Hey, Ada!", REBUILD).await;
    eprintln!("dev loop: fix to new reply in {took:?}");
    assert!(
        host.log()
            .iter()
            .all(|l| !(l.contains("event=\"rejected\"") && l.contains("devloop"))),
        "a dev-loop install was rejected:\n{}",
        host.log().join("\n")
    );
}
