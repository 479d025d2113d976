//! How the host reaches Redis: a URL plus what a production Redis asks
//! for besides, turned into a client before anything connects.
//!
//! - TLS (`rediss://`, and to every node of `rediss+cluster://`) through
//!   rustls: the system's trust store, plus the CA of `redis_tls_ca` when
//!   set (a private CA need not be installed system-wide), and a client
//!   certificate for servers that ask for one.
//! - The password from the URL, or from `redis_password_file` so that it
//!   is on no command line.
//!
//! The same checks run for `--check-config` and at start, so a setting
//! the check accepts is one the server can start with: the URL parses,
//! the files can be read and hold what they should, and TLS files go with
//! a TLS URL only.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use redis::IntoConnectionInfo;

/// Most bytes read from one certificate, key or password file.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The settings about reaching Redis, besides the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Access {
    /// A PEM file of CA certificates trusted besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// A PEM client certificate (chain) and its key, for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A file whose first line is Redis's password.
    pub password_file: Option<PathBuf>,
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccessError {
    #[error("invalid Redis URL for groups: {0}")]
    Url(String),
    #[error("cannot read {setting} {path}: {error}")]
    Read {
        setting: &'static str,
        path: String,
        error: String,
    },
    #[error("{setting} {path}: {why}")]
    Content {
        setting: &'static str,
        path: String,
        why: String,
    },
    #[error("redis_tls_cert and redis_tls_key go together: set both or neither")]
    HalfPair,
    #[error("{0} is set, but the Redis URL is not a TLS one (rediss://)")]
    NotTls(&'static str),
    #[error("the Redis URL holds a password and redis_password_file is set: one or the other")]
    TwoPasswords,
    #[error("cannot make a TLS client for Redis: {0}")]
    Tls(String),
    #[error(transparent)]
    Sentinel(#[from] super::sentinel::SentinelUrlError),
}

impl Access {
    /// Whether any TLS file is set.
    fn any_tls(&self) -> Option<&'static str> {
        if self.tls_ca.is_some() {
            Some("redis_tls_ca")
        } else if self.tls_cert.is_some() {
            Some("redis_tls_cert")
        } else if self.tls_key.is_some() {
            Some("redis_tls_key")
        } else {
            None
        }
    }
}

/// Reads at most [`MAX_FILE_BYTES`] of `path`; more is an error.
fn read_bounded(setting: &'static str, path: &Path) -> Result<Vec<u8>, AccessError> {
    let read_error = |error: std::io::Error| AccessError::Read {
        setting,
        path: path.display().to_string(),
        error: error.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(content(
            setting,
            path,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

fn content(setting: &'static str, path: &Path, why: impl Into<String>) -> AccessError {
    AccessError::Content {
        setting,
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// The PEM certificates of `path`, at least one.
fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<(Vec<u8>, Vec<rustls::pki_types::CertificateDer<'static>>), AccessError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = read_bounded(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(setting, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(content(setting, path, "holds no PEM certificate"));
    }
    Ok((pem, certs))
}

/// The system's trust store as PEM, so that the CA file is trusted besides
/// it (the Redis client takes one PEM bundle, which replaces the system's).
fn system_roots_pem() -> Vec<u8> {
    use base64::Engine;
    let found = rustls_native_certs::load_native_certs();
    let mut pem = Vec::new();
    for cert in found.certs {
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// Installs ring as the process's TLS provider, once (the first caller
/// wins; a second install is refused and harmless).
#[allow(deprecated)] // ring has no post-quantum key exchange; aws-lc-rs would need cmake and a C toolchain.
fn crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The connection settings of `url` with the password of
/// `redis_password_file`, and the URL for logs (without a password). Its
/// TCP connections send at once (`TCP_NODELAY`, which the Redis client
/// leaves off): a command written while the previous one's answer is on
/// its way must not wait for that answer's acknowledgement (up to 40 ms on
/// Linux), as Nagle's algorithm would have it.
pub(crate) fn connection_info(
    url: &str,
    access: &Access,
) -> Result<(redis::ConnectionInfo, String), AccessError> {
    let mut info = url
        .into_connection_info()
        .map_err(|e| AccessError::Url(e.to_string()))?;
    if let Some(path) = &access.password_file {
        if info.redis_settings().password().is_some() {
            return Err(AccessError::TwoPasswords);
        }
        let bytes = read_bounded("redis_password_file", path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| content("redis_password_file", path, "not UTF-8 text"))?;
        let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if password.is_empty() {
            return Err(content(
                "redis_password_file",
                path,
                "holds no password on its first line",
            ));
        }
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    Ok((info.set_tcp_settings(tcp), redacted(url)))
}

/// Whether `info` is for a TLS connection.
pub(crate) fn is_tls(info: &redis::ConnectionInfo) -> bool {
    matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. })
}

/// Without TLS, no TLS file may be set: an error naming the first one.
pub(crate) fn no_tls_files(access: &Access) -> Result<(), AccessError> {
    match access.any_tls() {
        Some(setting) => Err(AccessError::NotTls(setting)),
        None => Ok(()),
    }
}

/// The certificates of a TLS connection: the CA of `redis_tls_ca` besides
/// the system's roots (or the system's alone), and the client certificate
/// and key when set, each file read and checked.
pub(crate) fn tls_certificates(access: &Access) -> Result<redis::TlsCertificates, AccessError> {
    crypto_provider();
    let client_tls = match (&access.tls_cert, &access.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(client_pair(cert, key)?),
        _ => return Err(AccessError::HalfPair),
    };
    let root_cert = match &access.tls_ca {
        None => None,
        Some(path) => {
            let (mut pem, _) = certificates("redis_tls_ca", path)?;
            pem.push(b'\n');
            pem.extend_from_slice(&system_roots_pem());
            Some(pem)
        }
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// The client for `url` with `access`, and the URL for logs (without a
/// password); see [`connection_info`].
pub(crate) fn client(url: &str, access: &Access) -> Result<(redis::Client, String), AccessError> {
    let (info, where_) = connection_info(url, access)?;
    if !is_tls(&info) {
        no_tls_files(access)?;
        let client = redis::Client::open(info).map_err(|e| AccessError::Url(e.to_string()))?;
        return Ok((client, where_));
    }
    let client = redis::Client::build_with_tls(info, tls_certificates(access)?)
        .map_err(|e| AccessError::Tls(e.to_string()))?;
    Ok((client, where_))
}

/// A client certificate and its key, checked to go together.
fn client_pair(cert: &Path, key: &Path) -> Result<redis::ClientTlsConfig, AccessError> {
    let identity = client_identity(cert, key)?;
    Ok(redis::ClientTlsConfig {
        client_cert: identity.cert_pem,
        client_key: identity.key_pem,
    })
}

/// A client certificate (chain) and its key, as read and parsed.
struct Identity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// Reads a client certificate and its key, and checks that they go
/// together.
fn client_identity(cert: &Path, key: &Path) -> Result<Identity, AccessError> {
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    let (cert_pem, chain) = certificates("redis_tls_cert", cert)?;
    let key_pem = read_bounded("redis_tls_key", key)?;
    let parsed = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| content("redis_tls_key", key, format!("no PEM private key: {e}")))?;
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain.clone(), parsed.clone_key())
        .map_err(|e| {
            content(
                "redis_tls_key",
                key,
                format!("does not fit the certificate: {e}"),
            )
        })?;
    Ok(Identity {
        cert_pem,
        key_pem,
        chain,
        key: parsed,
    })
}

/// The TLS settings of [`client`] as a rustls configuration, for the
/// connections the host speaks itself ([`super::bounded_pop`]): the same
/// trust (the system's store, plus `redis_tls_ca` when set) and the same
/// client certificate.
pub(super) fn tls_config(access: &Access) -> Result<rustls::ClientConfig, AccessError> {
    crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &access.tls_ca {
        let (_, certs) = certificates("redis_tls_ca", path)?;
        let (_, refused) = roots.add_parsable_certificates(certs);
        if refused > 0 {
            return Err(content(
                "redis_tls_ca",
                path,
                format!("{refused} certificate(s) cannot be trust anchors"),
            ));
        }
    }
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match (&access.tls_cert, &access.tls_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let identity = client_identity(cert, key)?;
            builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| AccessError::Tls(e.to_string()))
        }
        _ => Err(AccessError::HalfPair),
    }
}

/// The URL without a password, for logs.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_need_a_tls_url() {
        let access = Access {
            tls_ca: Some("/nonexistent".into()),
            ..Access::default()
        };
        assert!(matches!(
            client("redis://127.0.0.1:1/0", &access),
            Err(AccessError::NotTls("redis_tls_ca"))
        ));
    }

    #[test]
    fn a_tls_url_makes_a_client_and_files_are_checked() {
        assert!(client("rediss://127.0.0.1:1/0", &Access::default()).is_ok());
        let missing = Access {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Access::default()
        };
        let error = client("rediss://127.0.0.1:1/0", &missing).map(|_| ());
        assert!(
            matches!(
                &error,
                Err(AccessError::Read {
                    setting: "redis_tls_ca",
                    ..
                })
            ),
            "{error:?}"
        );
        let half = Access {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            ..Access::default()
        };
        assert!(matches!(
            client("rediss://127.0.0.1:1/0", &half),
            Err(AccessError::HalfPair)
        ));
    }

    #[test]
    fn a_file_that_is_no_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("rohrpost-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let access = Access {
            tls_ca: Some(file),
            ..Access::default()
        };
        let error = client("rediss://127.0.0.1:1/0", &access).map(|_| ());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(
                &error,
                Err(AccessError::Content {
                    setting: "redis_tls_ca",
                    ..
                })
            ),
            "{error:?}"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted("rediss://:s3cret@h:1/0"), "rediss://***@h:1/0");
        assert_eq!(redacted("redis://h:1/0"), "redis://h:1/0");
    }
}
