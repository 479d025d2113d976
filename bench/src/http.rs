//! A minimal HTTP/1.1 client for `POST /api/notify`: one keep-alive
//! connection, one request at a time, JSON bodies with a `Content-Length`
//! (which is all the host's endpoint sends). Small enough that its cost is
//! not mistaken for the host's.

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// The longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A response: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// False when the server said `Connection: close`.
    pub keep_alive: bool,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection to one server, opened on first use and again
/// after the server closed it.
pub struct HttpClient {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    /// A client of the server at `addr` (`host:port`).
    pub fn new(addr: &str) -> HttpClient {
        HttpClient {
            addr: addr.to_owned(),
            stream: None,
        }
    }

    /// Opens the connection now rather than on the first request.
    pub async fn connect(&mut self) -> Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .with_context(|| format!("cannot connect to {}", self.addr))?;
            stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
            self.stream = Some(BufReader::new(stream));
        }
        Ok(())
    }

    /// Sends `POST path` with a JSON body and a bearer token and reads the
    /// response.
    pub async fn post_json(&mut self, path: &str, bearer: &str, body: &str) -> Result<Response> {
        self.connect().await?;
        let stream = self.stream.as_mut().context("no connection")?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {bearer}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: keep-alive\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let result = async {
            stream
                .write_all(request.as_bytes())
                .await
                .context("cannot send the request")?;
            stream.flush().await.context("cannot send the request")?;
            read_response(stream).await
        }
        .await;
        if !result.as_ref().is_ok_and(|response| response.keep_alive) {
            self.stream = None;
        }
        result
    }
}

/// Reads one response: the head up to the blank line, then as many body
/// bytes as its `Content-Length` says.
pub async fn read_response<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Response> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let read = reader
            .read_until(b'\n', &mut head)
            .await
            .context("cannot read the response")?;
        if read == 0 {
            bail!("the server closed the connection before the end of the response head");
        }
        if head.len() > MAX_HEAD {
            bail!("the response head is longer than {MAX_HEAD} bytes");
        }
    }
    let head = std::str::from_utf8(&head).context("the response head is not UTF-8")?;
    let parsed = parse_head(head)?;
    let mut body = vec![0; parsed.content_length];
    reader
        .read_exact(&mut body)
        .await
        .context("the server closed the connection before the end of the body")?;
    Ok(Response {
        status: parsed.status,
        body,
        keep_alive: parsed.keep_alive,
    })
}

/// What the head of a response says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: usize,
    keep_alive: bool,
}

/// Parses a response head (status line and header lines, each ending in
/// CRLF).
fn parse_head(head: &str) -> Result<Head> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 response: '{status_line}'");
    }
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status code in '{status_line}'"))?;
    let mut content_length = None;
    let mut keep_alive = version != "HTTP/1.0";
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("malformed header line '{line}'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse()
                .with_context(|| format!("bad Content-Length '{value}'"))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("Transfer-Encoding '{value}' is not supported, only Content-Length");
        }
    }
    Ok(Head {
        status,
        content_length: content_length.context("the response has no Content-Length")?,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                    content-length: 42\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        assert_eq!(
            parse_head(head).expect("parses"),
            Head {
                status: 200,
                content_length: 42,
                keep_alive: true
            }
        );
        let closing = "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let parsed = parse_head(closing).expect("parses");
        assert_eq!((parsed.status, parsed.keep_alive), (401, false));
        assert!(parse_head("HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head("SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn responses_are_read_one_after_another() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"delivered\":3}\
                            HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}";
        let mut reader = BufReader::new(wire);
        let first = read_response(&mut reader).await.expect("first response");
        assert_eq!(
            (first.status, first.text().as_str()),
            (200, "{\"delivered\":3}")
        );
        let second = read_response(&mut reader).await.expect("second response");
        assert_eq!((second.status, second.text().as_str()), (400, "{}"));
        assert!(read_response(&mut reader).await.is_err());
    }

    #[tokio::test]
    async fn a_short_body_is_an_error() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}";
        assert!(read_response(&mut BufReader::new(wire)).await.is_err());
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Le";
        assert!(read_response(&mut BufReader::new(wire)).await.is_err());
    }
}
