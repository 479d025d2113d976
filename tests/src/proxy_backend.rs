//! The HTTP backend of the proxy plugin's tests: `tests/proxy_backend/
//! backend.py` (Python 3's standard library only) run as a child process
//! on a free port, killed with the test.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::workspace;

/// A running backend.
pub struct Backend {
    child: Child,
    pub addr: String,
}

impl Backend {
    /// Starts the backend and waits until it listens.
    pub fn start() -> Result<Backend> {
        let script = workspace().join("tests/proxy_backend/backend.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("python3 is needed for the proxy tests")?;
        let stdout = child.stdout.take().context("the backend's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(port) = line.trim().strip_prefix("port ") else {
            let _ = child.kill();
            bail!("the backend did not start: {line:?}");
        };
        Ok(Backend {
            addr: format!("127.0.0.1:{port}"),
            child,
        })
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the backend's `GET <path>` answers, as JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = crate::get(&self.addr, path).await?;
        if status != 200 {
            bail!("GET {path}: {status}");
        }
        Ok(serde_json::from_str(&body)?)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
