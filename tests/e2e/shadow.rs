//! The directory the plugin copies are loaded from (by plugins in the
//! server's process), attacked by a local user: directories pre-created under the names a server would once have
//! used (other owner, mode 0777, symlinks inside) are not used, every
//! mapped copy lies in a directory of the server's user with mode 0700, the
//! directory goes away on SIGTERM, a killed server's is removed by the next
//! start, and nothing of another user is touched. The tests run as root;
//! the other user is uid 65534 (nobody).

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rohrpost_tests::{build, set_mode, Host, TempDir};

const T: Duration = Duration::from_secs(10);
const OTHER: u32 = 65534;
const PLUGINS: &[&str] = &["ping", "fixture-testkit"];

/// The copies' names a server before this fix would have used.
const COPY_NAMES: &[&str] = &[
    "libfixture_testkit-1.so",
    "libfixture_testkit-2.so",
    "libping-1.so",
    "libping-2.so",
];

/// A directory like `/tmp`: root's, mode 1777.
fn sticky_dir(path: &Path) -> PathBuf {
    std::fs::create_dir(path).unwrap();
    set_mode(path, 0o1777);
    path.to_owned()
}

/// A directory of the other user with this mode.
fn others_dir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir(path).unwrap();
    std::os::unix::fs::chown(path, Some(OTHER), Some(OTHER)).unwrap();
    set_mode(path, mode);
    path.to_owned()
}

/// A root-only file the attacker would like overwritten.
fn precious(path: &Path) -> PathBuf {
    std::fs::write(path, "precious").unwrap();
    set_mode(path, 0o600);
    path.to_owned()
}

fn assert_precious(path: &Path) {
    assert_eq!(std::fs::read_to_string(path).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), 0);
}

/// The last pid the kernel handed out.
fn last_pid() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The effective uid of a process.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The files mapped into the process that lie under `root`.
fn mapped_under(pid: u32, root: &Path) -> BTreeSet<PathBuf> {
    let root = root.canonicalize().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|line| line.find(" /").map(|at| &line[at + 1..]))
        .map(|path| PathBuf::from(path.strip_suffix(" (deleted)").unwrap_or(path)))
        .filter(|path| path.starts_with(&root))
        .collect()
}

/// The files mapped under `root` into the host or one of its plugins'
/// workers (which load the host's copies).
fn mapped_by_host_or_workers(host: &Host, root: &Path) -> BTreeSet<PathBuf> {
    let mut mapped = mapped_under(host.pid(), root);
    for worker in host.children() {
        mapped.extend(mapped_under(worker, root));
    }
    mapped
}

/// Checks every mapped copy under `root` and returns their directories:
/// each is a real directory right in `root`, owned by the server's user,
/// mode 0700.
fn copy_dirs(host: &Host, root: &Path) -> BTreeSet<PathBuf> {
    let copies = mapped_by_host_or_workers(host, root);
    assert!(
        copies.len() >= PLUGINS.len(),
        "expected the plugin copies under {}, mapped: {copies:?}",
        root.display()
    );
    let server_uid = uid_of(host.pid());
    let root = root.canonicalize().unwrap();
    let dirs: BTreeSet<PathBuf> = copies
        .iter()
        .map(|copy| copy.parent().unwrap().to_owned())
        .collect();
    for dir in &dirs {
        assert_eq!(dir.parent(), Some(root.as_path()), "{}", dir.display());
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert!(meta.is_dir(), "{} is not a real directory", dir.display());
        assert_eq!(
            meta.uid(),
            server_uid,
            "{} is not the server's",
            dir.display()
        );
        assert_eq!(
            meta.mode() & 0o7777,
            0o700,
            "{} has mode {:04o}",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    dirs
}

/// The plugins run in the server's process: only there are copies
/// loaded from the directory (a worker loads a sealed copy in memory).
const IN_PROCESS: &str = "[plugins.ping]\nisolation = \"none\"\n\
    [plugins.testkit]\nisolation = \"none\"\nlibrary = \"libfixture_testkit.so\"\n";

fn start(tmp: &Path, xdg: &str) -> Host {
    let config = tmp.parent().unwrap().join("rohrpost.toml");
    std::fs::write(&config, IN_PROCESS).unwrap();
    Host::start_with_env(
        PLUGINS,
        &["--config", config.to_str().unwrap()],
        &[("TMPDIR", tmp.to_str().unwrap()), ("XDG_RUNTIME_DIR", xdg)],
    )
    .unwrap()
}

async fn ping(host: &Host) {
    let mut c = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
}

/// What a directory holds: names, and for each its owner, mode and (for a
/// symlink) target.
fn listing(dir: &Path) -> BTreeSet<(String, u32, u32, Option<PathBuf>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let target = std::fs::read_link(e.path()).ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.uid(),
                meta.mode(),
                target,
            )
        })
        .collect()
}

#[tokio::test]
async fn pre_created_hostile_directories_are_not_used() {
    build();
    let base = TempDir::new("shadow-hostile");
    let tmp = sticky_dir(&base.path().join("tmp"));
    let secret = precious(&base.path().join("secret"));
    // The directory an earlier server would have made for its pid, for
    // each of the next pids: the other user's, open to all, with symlinks
    // to the root-only file under the copies' names.
    let first = last_pid() + 1;
    let mut hostile = Vec::new();
    for pid in first..first + 200 {
        let dir = others_dir(&tmp.join(format!("rohrpost-shadow-{pid}")), 0o777);
        for name in COPY_NAMES {
            let link = dir.join(name);
            std::os::unix::fs::symlink(&secret, &link).unwrap();
            std::os::unix::fs::lchown(&link, Some(OTHER), Some(OTHER)).unwrap();
        }
        hostile.push((dir.clone(), listing(&dir)));
    }

    let host = start(&tmp, "");
    let in_range = (first..first + 200).contains(&host.pid());
    eprintln!(
        "server pid {} ({} the pre-created range)",
        host.pid(),
        if in_range { "in" } else { "outside" }
    );
    ping(&host).await;
    let dirs = copy_dirs(&host, &tmp);
    for (dir, before) in &hostile {
        assert!(
            !dirs.contains(dir),
            "a copy was loaded from {}",
            dir.display()
        );
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (OTHER, 0o777));
        assert_eq!(&listing(dir), before, "{} was changed", dir.display());
    }
    assert_precious(&secret);
    let mut other = host.connect().await.unwrap();
    other.ping_ok(2).await.unwrap();
    assert_eq!(
        other.request(r#"{"id":3,"type":"fail"}"#).await.unwrap()["error"],
        "something went wrong"
    );
}

#[tokio::test]
async fn copies_go_to_a_private_runtime_dir_and_never_to_a_hostile_one() {
    build();
    let base = TempDir::new("shadow-xdg");
    let tmp = sticky_dir(&base.path().join("tmp"));

    let runtime = base.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    set_mode(&runtime, 0o700);
    let host = start(&tmp, runtime.to_str().unwrap());
    ping(&host).await;
    assert_eq!(copy_dirs(&host, &runtime).len(), 1);
    assert!(mapped_under(host.pid(), &tmp).is_empty());
    drop(host);

    // Another user's runtime dir, or one that others may write, is passed
    // over for the temporary directory.
    for (owner, mode) in [(OTHER, 0o700), (0, 0o777)] {
        let runtime = base.path().join(format!("runtime-{owner}-{mode:o}"));
        std::fs::create_dir(&runtime).unwrap();
        std::os::unix::fs::chown(&runtime, Some(owner), Some(owner)).unwrap();
        set_mode(&runtime, mode);
        let host = start(&tmp, runtime.to_str().unwrap());
        ping(&host).await;
        assert_eq!(copy_dirs(&host, &tmp).len(), 1);
        assert!(mapped_under(host.pid(), &runtime).is_empty());
        assert!(
            listing(&runtime).is_empty(),
            "{} was written",
            runtime.display()
        );
        host.wait_for_log(&["not using XDG_RUNTIME_DIR"], T)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_unsafe_temporary_directory_stops_the_start() {
    let built = build();
    let base = TempDir::new("shadow-unsafe");
    let plugins = TempDir::new("shadow-unsafe-plugins");
    rohrpost_tests::install(&built.plugin("ping"), plugins.path(), "libping.so");
    // Writable by all without the sticky bit: anyone could rename the
    // server's directory away and put their own in its place. Or owned by
    // another user, who always can.
    let open = base.path().join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let others = others_dir(&base.path().join("others"), 0o755);
    for tmp in [open, others] {
        let mut child = Command::new(built.host())
            .args(["--listen", "127.0.0.1:0", "--plugins"])
            .arg(plugins.path())
            .env("TMPDIR", &tmp)
            .env("XDG_RUNTIME_DIR", "")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the host started with TMPDIR={}", tmp.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
        assert!(!status.success(), "{log}");
        assert!(
            log.contains("cannot create the directory for the plugin copies")
                && log.contains("refusing"),
            "{log}"
        );
        assert!(listing(&tmp).is_empty(), "{} was written", tmp.display());
    }
}

#[tokio::test]
async fn a_killed_servers_directory_is_removed_by_the_next_start_and_nothing_else() {
    build();
    let base = TempDir::new("shadow-stale");
    let tmp = sticky_dir(&base.path().join("tmp"));
    // Another user's directories under the new names: left alone, even
    // for a pid that cannot exist.
    let theirs = others_dir(
        &tmp.join("rohrpost-shadow-99999999-0123456789abcdef"),
        0o700,
    );
    std::fs::write(theirs.join("lock"), "").unwrap();
    let theirs_too = others_dir(&tmp.join("rohrpost-shadow-99999999"), 0o777);
    // A symlink of the server's user under such a name, to a directory
    // that must survive.
    let keep = base.path().join("keep");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("file"), "kept").unwrap();
    let link = tmp.join("rohrpost-shadow-99999998-0123456789abcdef");
    std::os::unix::fs::symlink(&keep, &link).unwrap();
    // Directories an earlier server of this user made under the old names:
    // one of a process that is gone (removed), one of a live one (kept).
    let old_gone = tmp.join("rohrpost-shadow-99999997");
    std::fs::create_dir(&old_gone).unwrap();
    std::fs::write(old_gone.join("libping-1.so"), "left behind").unwrap();
    let old_live = tmp.join(format!("rohrpost-shadow-{}", std::process::id()));
    std::fs::create_dir(&old_live).unwrap();

    let mut a = start(&tmp, "");
    ping(&a).await;
    let dir_a = copy_dirs(&a, &tmp).into_iter().next().unwrap();

    // A second server in the same place leaves a running one's alone.
    let b = start(&tmp, "");
    ping(&b).await;
    let dir_b = copy_dirs(&b, &tmp).into_iter().next().unwrap();
    assert_ne!(dir_a, dir_b);
    assert!(dir_a.is_dir(), "a running server's directory was removed");
    ping(&a).await;

    a.signal(libc::SIGKILL);
    a.exit_code(T).await.unwrap();
    assert!(dir_a.is_dir(), "a killed server cannot clean up");

    let mut c = start(&tmp, "");
    ping(&c).await;
    let dir_c = copy_dirs(&c, &tmp).into_iter().next().unwrap();
    assert!(
        !dir_a.exists(),
        "the killed server's directory is still there"
    );
    assert!(
        !old_gone.exists(),
        "an old directory of a gone server is still there"
    );
    assert!(old_live.is_dir());
    assert!(dir_b.is_dir(), "a running server's directory was removed");
    for dir in [&theirs, &theirs_too] {
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert_eq!(meta.uid(), OTHER);
    }
    assert!(theirs.join("lock").exists());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(keep.join("file")).unwrap(), "kept");

    // SIGTERM: the server removes its own directory on the way out.
    c.signal(libc::SIGTERM);
    let code = c.exit_code(T).await.unwrap();
    assert_eq!(code, Some(0), "its log:\n{}", c.log().join("\n"));
    assert!(!dir_c.exists(), "{} is left after SIGTERM", dir_c.display());
    assert!(dir_b.is_dir());
    ping(&b).await;
}
