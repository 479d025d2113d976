//! Behind a reverse proxy: Debian's nginx, started with the repository's
//! `deploy/nginx.conf`, in front of the real host. The client's address and
//! scheme come from the proxy's headers, but only from a trusted proxy; the
//! origin check follows the scheme the client used; notifications pass
//! only from the backend network.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rohrpost_tests::{post, redis::free_port, workspace, Client, Host, TempDir};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "proxy-test-token";

/// nginx on a port of its own, serving the repository's site file with the
/// upstream pointed at `upstream`; stopped when dropped.
struct Nginx {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "nginx is not installed: this test runs Debian's nginx in front of the server; \
             install it with `apt-get install nginx` (as .ci/run does) or put an `nginx` on PATH"
        )
    })
}

impl Nginx {
    async fn start(upstream: &str) -> Nginx {
        let site = std::fs::read_to_string(workspace().join("deploy/nginx.conf"))
            .expect("deploy/nginx.conf");
        assert!(site.contains("server 127.0.0.1:8000;") && site.contains("listen 80;"));
        let port = free_port();
        let site = site
            .replace("server 127.0.0.1:8000;", &format!("server {upstream};"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        let dir = TempDir::new("nginx");
        let root = dir.path();
        std::fs::write(root.join("site.conf"), site).expect("site file");
        std::fs::write(root.join("nginx.conf"), main_config(root)).expect("main file");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .arg("-e")
            .arg(root.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + T;
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }
}

/// What the system's nginx.conf would hold, in the test's own directory.
fn main_config(root: &Path) -> String {
    let root = root.display();
    format!(
        "daemon off;\nmaster_process off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  \
         proxy_temp_path {root}/proxy;\n  fastcgi_temp_path {root}/fastcgi;\n  \
         uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n  \
         include {root}/site.conf;\n}}\n"
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// The scope the host gives handlers, asked through `inspect`.
async fn scope(client: &mut Client) -> serde_json::Value {
    let reply = client
        .request(r#"{"id":1,"type":"inspect"}"#)
        .await
        .expect("a reply");
    reply["data"]["scope"].clone()
}

/// A handshake from 127.0.0.3 with this `Origin` is refused with 403.
async fn assert_refused_403(addr: &str, origin: &str) {
    let refused = Client::connect_from(addr, ip("127.0.0.3"), Some(origin))
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("403")),
        "{origin}: {refused:?}"
    );
}

/// A POST of `body` to `addr` from the local address `source`; the status.
async fn post_from(addr: &str, source: IpAddr, path: &str, body: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .expect("bound");
    let mut stream = socket
        .connect(addr.parse().expect("an address"))
        .await
        .expect("connected");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"))
}

#[tokio::test]
async fn through_nginx_the_client_is_known_and_the_origin_checked_by_its_scheme() {
    let host = Host::start_with(
        &["ping", "fixture-testkit"],
        &[
            "--trusted-proxies",
            "127.0.0.1",
            "--allowed-origins",
            "app.example",
            "--notify-token",
            TOKEN,
        ],
    )
    .unwrap();
    let nginx = Nginx::start(&host.addr).await;

    // A browser on 127.0.0.3, over plain HTTP to nginx.
    let mut browser =
        Client::connect_from(&nginx.addr, ip("127.0.0.3"), Some("http://app.example"))
            .await
            .unwrap();
    browser.ping_ok(1).await.unwrap();
    let seen = scope(&mut browser).await;
    assert_eq!(seen["remote_addr"], "127.0.0.3", "{seen}");
    assert_eq!(seen["scheme"], "ws", "{seen}");
    // The client used http: an https page's origin does not match.
    assert_refused_403(&nginx.addr, "https://app.example").await;
    assert_refused_403(&nginx.addr, "http://evil.example").await;

    // A group message through nginx, notified from the backend network.
    browser
        .request(r#"{"id":2,"type":"join","data":{"group":"room"}}"#)
        .await
        .unwrap();
    let notification =
        json!({"model": "Room", "pk": 1, "event": "update", "group": "room", "object": {"n": 1}})
            .to_string();
    let (status, answer) = post(&nginx.addr, "/api/notify", Some(TOKEN), &notification)
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 1, "{answer}");
    let update = browser.recv_json(T).await.unwrap();
    assert_eq!(update["type"], "subscription-update", "{update}");
    assert_eq!(update["data"]["object"]["n"], 1);
    // From outside the backend network, nginx refuses it.
    assert_eq!(
        post_from(&nginx.addr, ip("127.0.0.3"), "/api/notify", &notification).await,
        403
    );
    // The status page is not served through the proxy.
    let (status, _) = rohrpost_tests::get(&nginx.addr, "/").await.unwrap();
    assert_eq!(status, 404);
    let (status, _) = rohrpost_tests::get(&nginx.addr, "/healthz").await.unwrap();
    assert_eq!(status, 200);
    host.wait_for_log(&["origin not allowed", "127.0.0.3"], T)
        .await
        .unwrap();
}

/// Forwarding headers from a peer that is not a trusted proxy change
/// nothing: anyone can send them.
#[tokio::test]
async fn forwarding_headers_from_other_peers_are_ignored() {
    // nginx (on 127.0.0.1) is not trusted here.
    let host = Host::start_with(
        &["ping", "fixture-testkit"],
        &[
            "--trusted-proxies",
            "10.9.9.9",
            "--allowed-origins",
            "app.example",
        ],
    )
    .unwrap();
    let nginx = Nginx::start(&host.addr).await;
    let mut client = Client::connect_from(&nginx.addr, ip("127.0.0.3"), Some("http://app.example"))
        .await
        .unwrap();
    let seen = scope(&mut client).await;
    let remote = seen["remote_addr"].as_str().unwrap_or_default().to_owned();
    assert!(
        remote.starts_with("127.0.0.1:"),
        "the proxy's own address: {seen}"
    );
    assert_eq!(seen["scheme"], "ws");
}
