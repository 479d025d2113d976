//! A certificate authority and a server certificate for 127.0.0.1, made
//! with the `openssl` command for one test, in a temp dir of its own, for
//! a `redis-server` that speaks TLS.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::TempDir;

/// A test CA and the server certificate it signed.
pub struct TestTls {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    _dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestTls {
    /// The server certificate, its key and the CA, for a cluster of
    /// TLS-only Redis servers.
    pub fn redis_files(&self) -> rohrpost_harness::redis_servers::TlsFiles {
        rohrpost_harness::redis_servers::TlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            ca: self.ca_cert.clone(),
        }
    }

    /// A new CA named `label` and a server certificate for 127.0.0.1 and
    /// localhost, valid for two days (P-256 keys: quick to make). The
    /// certificate is for clients too: Redis Cluster nodes present it to
    /// each other on the cluster bus, which asks for one.
    pub fn new(label: &str) -> TestTls {
        let dir = TempDir::new(&format!("tls-{label}"));
        let at = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let ca_subject = format!("/CN=rohrpost test CA {label}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.crt", "-subj", &ca_subject]);
        openssl(at, &args);
        let mut args = vec!["req", "-nodes"];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(at, &args);
        std::fs::write(
            at.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write server.ext");
        openssl(
            at,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.crt",
                "-extfile",
                "server.ext",
            ],
        );
        TestTls {
            ca_cert: at.join("ca.crt"),
            server_cert: at.join("server.crt"),
            server_key: at.join("server.key"),
            _dir: dir,
        }
    }
}

/// A host with groups at `url` that trusts `ca` besides the system's,
/// run until it exits (it must refuse to start when `ca` did not sign the
/// server's certificate): its exit code and stderr.
pub fn refused_with_ca(url: &str, ca: &Path, plugins: &Path) -> (Option<i32>, String) {
    crate::run_host(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--groups".as_ref(),
        url.as_ref(),
        "--redis-tls-ca".as_ref(),
        ca.as_os_str(),
        "--plugins".as_ref(),
        plugins.as_os_str(),
    ])
}
