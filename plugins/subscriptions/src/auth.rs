//! Who may subscribe: the `[plugins.subscriptions]` table of the host's
//! config file, checked once at load, and the check of a request's
//! `auth_jwt` against it.
//!
//! ```toml
//! [plugins.subscriptions]
//! auth = "off"                  # everyone may subscribe (logs a warning)
//!
//! auth = "tokens"               # auth_jwt must be one of these
//! tokens = ["a", "b"]
//!
//! auth = "jwt"                  # auth_jwt must be a signed, unexpired JWT
//! jwt_secret = "..."            # required
//! jwt_algorithm = "HS256"       # or "HS384", "HS512"; default "HS256"
//! leeway_seconds = 0            # clock skew allowed for `exp`; default 0
//!
//! auth = "backend"              # the application's backend decides
//! url = "http://127.0.0.1:8000/rohrpost/subscribe/"   # required
//! timeout = "5s"                # default 5 s
//! headers = { X-Secret = "..." }  # sent with every question
//! forward_headers = ["cookie"]  # handshake headers passed on; none by default
//! max_response_bytes = 65536    # default 64 KiB
//! ```
//!
//! With `auth = "backend"` each subscribe is POSTed to `url` and the
//! backend's answer decides ([`crate::backend`]); unsubscribing needs no
//! question.
//!
//! `auth` has no default: a table without it refuses to load, so that a
//! forgotten table does not let everyone read every group. A setting that
//! the chosen mode would ignore is an error too: a
//! `jwt_secret` next to `auth = "off"` most likely means a forgotten
//! `auth = "jwt"`, which would otherwise let everyone in.

use std::fmt;

use std::collections::BTreeMap;

use backend_http::settings::Timeout;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::backend::{BackendTable, Decider};

/// The table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    auth: Option<Mode>,
    tokens: Option<Vec<String>>,
    jwt_secret: Option<String>,
    jwt_algorithm: Option<String>,
    leeway_seconds: Option<i64>,
    url: Option<String>,
    timeout: Option<Timeout>,
    headers: Option<BTreeMap<String, String>>,
    forward_headers: Option<Vec<String>>,
    max_response_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Off,
    Tokens,
    Jwt,
    Backend,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Off => "off",
            Mode::Tokens => "tokens",
            Mode::Jwt => "jwt",
            Mode::Backend => "backend",
        })
    }
}

/// Why a table without `auth` is refused.
pub const AUTH_MISSING: &str = "'auth' is not set: set auth = \"tokens\", auth = \"jwt\" or auth = \"backend\" in [plugins.subscriptions], or auth = \"off\" to let anyone subscribe to any group";

/// The checked settings.
pub enum Authorization {
    /// Everyone may subscribe.
    Off,
    /// `auth_jwt` must equal one of these.
    Tokens(Vec<String>),
    /// `auth_jwt` must be a JWT signed with this key, with an `exp` in the
    /// future.
    Jwt {
        key: DecodingKey,
        validation: Box<Validation>,
    },
    /// The backend decides each subscription.
    Backend(Box<Decider>),
}

impl TryFrom<AuthConfig> for Authorization {
    type Error = String;

    fn try_from(config: AuthConfig) -> Result<Self, String> {
        let Some(mode) = config.auth else {
            return Err(AUTH_MISSING.into());
        };
        let misplaced = |key: &str, belongs: Mode| {
            format!("'{key}' is only used with auth = \"{belongs}\", but auth is \"{mode}\"")
        };
        if mode != Mode::Tokens && config.tokens.is_some() {
            return Err(misplaced("tokens", Mode::Tokens));
        }
        if mode != Mode::Jwt {
            for (key, set) in [
                ("jwt_secret", config.jwt_secret.is_some()),
                ("jwt_algorithm", config.jwt_algorithm.is_some()),
                ("leeway_seconds", config.leeway_seconds.is_some()),
            ] {
                if set {
                    return Err(misplaced(key, Mode::Jwt));
                }
            }
        }
        if mode != Mode::Backend {
            for (key, set) in [
                ("url", config.url.is_some()),
                ("timeout", config.timeout.is_some()),
                ("headers", config.headers.is_some()),
                ("forward_headers", config.forward_headers.is_some()),
                ("max_response_bytes", config.max_response_bytes.is_some()),
            ] {
                if set {
                    return Err(misplaced(key, Mode::Backend));
                }
            }
        }
        match mode {
            Mode::Off => Ok(Authorization::Off),
            Mode::Backend => Decider::new(BackendTable {
                url: config.url,
                timeout: config.timeout,
                headers: config.headers,
                forward_headers: config.forward_headers,
                max_response_bytes: config.max_response_bytes,
            })
            .map(|decider| Authorization::Backend(Box::new(decider))),
            Mode::Tokens => {
                let tokens = config.tokens.unwrap_or_default();
                if tokens.is_empty() {
                    return Err(
                        "auth = \"tokens\" needs a non-empty list 'tokens' (nobody could subscribe)"
                            .into(),
                    );
                }
                if tokens.iter().any(String::is_empty) {
                    return Err("'tokens' must not contain an empty string".into());
                }
                Ok(Authorization::Tokens(tokens))
            }
            Mode::Jwt => {
                let secret = match config.jwt_secret {
                    Some(secret) if !secret.is_empty() => secret,
                    Some(_) => return Err("'jwt_secret' must not be empty".into()),
                    None => return Err("auth = \"jwt\" needs 'jwt_secret'".into()),
                };
                let algorithm = match config.jwt_algorithm.as_deref() {
                    None | Some("HS256") => Algorithm::HS256,
                    Some("HS384") => Algorithm::HS384,
                    Some("HS512") => Algorithm::HS512,
                    Some(other) => {
                        return Err(format!(
                            "unsupported jwt_algorithm \"{other}\": expected \"HS256\", \"HS384\" or \"HS512\""
                        ))
                    }
                };
                let leeway = u64::try_from(config.leeway_seconds.unwrap_or(0))
                    .map_err(|_| "'leeway_seconds' must not be negative")?;
                let mut validation = Validation::new(algorithm);
                validation.leeway = leeway;
                validation.validate_exp = true;
                validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
                validation.validate_aud = false;
                Ok(Authorization::Jwt {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    validation: Box::new(validation),
                })
            }
        }
    }
}

impl Authorization {
    /// Whether a request with this `auth_jwt` field may subscribe (for
    /// `auth = "backend"`, which needs the group, see [`Decider::allows`]:
    /// never by the token alone).
    pub fn allows(&self, auth_jwt: Option<&Value>) -> bool {
        let token = auth_jwt.and_then(Value::as_str);
        match (self, token) {
            (Authorization::Off, _) => true,
            (Authorization::Backend(_), _) => false,
            (_, None) => false,
            (Authorization::Tokens(tokens), Some(token)) => tokens
                .iter()
                .any(|known| rohrpost_plugin_api::same_secret(token, known)),
            (Authorization::Jwt { key, validation }, Some(token)) => {
                jsonwebtoken::decode::<Value>(token, key, validation).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn parse(table: Value) -> Result<Authorization, String> {
        // As the host hands it over: JSON text.
        let config: AuthConfig =
            serde_json::from_str(&table.to_string()).map_err(|e| e.to_string())?;
        Authorization::try_from(config)
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn jwt(secret: &str, algorithm: Algorithm, claims: Value) -> String {
        encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode a test token")
    }

    #[test]
    fn backend_takes_its_settings() {
        let auth = parse(json!({"auth": "backend", "url": "http://127.0.0.1:1/s/",
            "timeout": "250ms", "headers": {"X-Secret": "s"}, "forward_headers": ["Cookie"],
            "max_response_bytes": 1024}))
        .unwrap();
        assert!(matches!(auth, Authorization::Backend(_)));
        // Never allowed by a token alone.
        assert!(!auth.allows(Some(&json!("anything"))));
    }

    #[test]
    fn auth_has_no_default() {
        let Err(reason) = parse(json!({})) else {
            panic!("a table without auth was accepted");
        };
        assert_eq!(reason, AUTH_MISSING);
    }

    #[test]
    fn off_allows_everyone() {
        let auth = parse(json!({"auth": "off"})).unwrap();
        assert!(auth.allows(None));
        assert!(auth.allows(Some(&json!("anything"))));
    }

    #[test]
    fn tokens_must_match_one_listed() {
        let auth = parse(json!({"auth": "tokens", "tokens": ["a", "bb"]})).unwrap();
        assert!(auth.allows(Some(&json!("a"))));
        assert!(auth.allows(Some(&json!("bb"))));
        assert!(!auth.allows(Some(&json!("b"))));
        assert!(!auth.allows(Some(&json!(""))));
        assert!(!auth.allows(Some(&json!(["a"]))));
        assert!(!auth.allows(None));
    }

    #[test]
    fn jwt_needs_a_good_signature_and_a_future_exp() {
        let auth =
            parse(json!({"auth": "jwt", "jwt_secret": "s", "jwt_algorithm": "HS384"})).unwrap();
        let good = jwt(
            "s",
            Algorithm::HS384,
            json!({"exp": now() + 3600, "aud": "x"}),
        );
        assert!(auth.allows(Some(&json!(good))));
        let expired = jwt("s", Algorithm::HS384, json!({"exp": now() - 3600}));
        assert!(!auth.allows(Some(&json!(expired))));
        let no_exp = jwt("s", Algorithm::HS384, json!({"sub": "u"}));
        assert!(!auth.allows(Some(&json!(no_exp))));
        let other_secret = jwt("t", Algorithm::HS384, json!({"exp": now() + 3600}));
        assert!(!auth.allows(Some(&json!(other_secret))));
        let other_algorithm = jwt("s", Algorithm::HS256, json!({"exp": now() + 3600}));
        assert!(!auth.allows(Some(&json!(other_algorithm))));
        assert!(!auth.allows(Some(&json!("not.a.jwt"))));
        assert!(!auth.allows(None));
    }

    #[test]
    fn leeway_accepts_a_token_that_just_expired() {
        let auth = parse(json!({"auth": "jwt", "jwt_secret": "s", "leeway_seconds": 120})).unwrap();
        let recent = jwt("s", Algorithm::HS256, json!({"exp": now() - 30}));
        assert!(auth.allows(Some(&json!(recent))));
    }

    #[test]
    fn invalid_tables_are_refused_with_a_reason() {
        let cases = [
            (json!({"auth": "jwt"}), "jwt_secret"),
            (json!({"auth": "jwt", "jwt_secret": ""}), "jwt_secret"),
            (
                json!({"auth": "jwt", "jwt_secret": "s", "jwt_algorithm": "RS256"}),
                "RS256",
            ),
            (json!({"auth": "tokens"}), "tokens"),
            (json!({"auth": "tokens", "tokens": []}), "tokens"),
            (json!({"auth": "tokens", "tokens": [""]}), "empty"),
            (json!({"auth": "maybe"}), "maybe"),
            (json!({"auth": "off", "secret": "s"}), "secret"),
            (json!({"jwt_secret": "s"}), "not set"),
            (json!({"auth": "off", "jwt_secret": "s"}), "jwt_secret"),
            (
                json!({"auth": "jwt", "jwt_secret": "s", "tokens": ["a"]}),
                "tokens",
            ),
            (
                json!({"auth": "jwt", "jwt_secret": "s", "leeway_seconds": -1}),
                "leeway",
            ),
            (json!({"auth": "backend"}), "url"),
            (json!({"auth": "backend", "url": "https://b/"}), "http://"),
            (
                json!({"auth": "backend", "url": "http://b/", "timeout": 0}),
                "timeout",
            ),
            (
                json!({"auth": "backend", "url": "http://b/", "tokens": ["a"]}),
                "tokens",
            ),
            (
                json!({"auth": "jwt", "jwt_secret": "s", "url": "http://b/"}),
                "url",
            ),
            (
                json!({"auth": "tokens", "tokens": ["a"], "forward_headers": ["cookie"]}),
                "forward_headers",
            ),
        ];
        for (table, mentions) in cases {
            match parse(table.clone()) {
                Ok(_) => panic!("accepted {table}"),
                Err(reason) => assert!(reason.contains(mentions), "{table}: {reason}"),
            }
        }
    }
}
