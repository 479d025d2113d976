//! What a new user meets first, against the real binary: `rohrpost --help`
//! explains every setting, and the shipped subscriptions plugin is secure
//! unless told otherwise.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use rohrpost_tests::{get, Host};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// The interval of the host's rate limit on the log lines a client can
/// cause (docs/operations.md: "at most 10 in 10 s").
const LOG_LIMIT_INTERVAL: Duration = Duration::from_secs(10);

/// A setting as docs/configuration.md lists it; a unit test of the host
/// keeps that table in step with the settings the host declares.
struct Setting {
    flag: String,
    env: String,
    key: String,
    /// Empty when it has none.
    default: String,
}

/// Every setting of docs/configuration.md's tables (not `--config`,
/// which names the file the settings' keys are in, and has no key).
fn documented_settings() -> Vec<Setting> {
    let doc = include_str!("../../docs/configuration.md");
    let cell = |text: &str| text.trim().trim_matches('`').to_owned();
    let settings: Vec<Setting> = doc
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            let default = cell(cells[4]);
            Setting {
                flag: cell(cells[1]).trim_start_matches("--").to_owned(),
                env: cell(cells[2]),
                key: cell(cells[3]),
                default: if default == "none" {
                    String::new()
                } else {
                    default
                },
            }
        })
        .filter(|setting: &Setting| !setting.key.is_empty())
        .collect();
    assert!(settings.len() > 30, "the settings tables were not found");
    settings
}

/// `rohrpost --help`, run with no `ROHRPOST_*` variable set except those
/// given.
fn help(env: &[(&str, &str)]) -> String {
    let output = Command::new(rohrpost_tests::build().host())
        .arg("--help")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("cannot run rohrpost --help");
    assert!(
        output.status.success(),
        "rohrpost --help failed: {output:?}"
    );
    String::from_utf8(output.stdout).expect("--help is UTF-8")
}

/// The help of each option, by its long flag: the text below (or beside)
/// the line naming it, up to the next option.
fn options(help: &str) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let names_an_option = line.starts_with("  ") && trimmed.starts_with('-');
        if names_an_option {
            let flag = trimmed
                .split([' ', ','])
                .find(|word| word.starts_with("--"))
                .unwrap_or_default()
                .to_owned();
            // Short help puts the text on the same line, after the value name.
            let beside = trimmed
                .split_once('>')
                .map_or("", |(_, rest)| rest)
                .trim()
                .to_owned();
            options.push((flag, beside));
        } else if let Some((_, text)) = options.last_mut() {
            text.push(' ');
            text.push_str(line.trim());
        }
    }
    options
}

/// The help text proper: without the bracketed notes clap and the host add.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}

#[test]
fn help_explains_every_option_with_its_default_and_environment_variable() {
    // A secret in the environment must not be shown.
    let help = help(&[("ROHRPOST_NOTIFY_TOKEN", "hunter2")]);
    let options = options(&help);
    let find = |flag: &str| {
        options
            .iter()
            .find(|(f, _)| f == flag)
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("{flag} is missing from --help:\n{help}"))
    };
    for setting in documented_settings() {
        let flag = format!("--{}", setting.flag);
        let text = find(&flag);
        let words = prose(text);
        assert!(
            words.len() > 10,
            "{flag} has no help text: {text:?}\n{help}"
        );
        if !setting.default.is_empty() {
            let default = format!("[default: {}]", setting.default);
            assert!(text.contains(&default), "{flag} lacks {default}: {text:?}");
        }
        let env = format!("[env: {}]", setting.env);
        assert!(text.contains(&env), "{flag} lacks {env}: {text:?}");
        let key = format!("[file key: {}]", setting.key);
        assert!(text.contains(&key), "{flag} lacks {key}: {text:?}");
    }
    let config = find("--config");
    assert!(prose(config).len() > 10, "--config has no help: {config:?}");
    // The variable is named, and does not read as set to "".
    assert!(config.contains("[env: ROHRPOST_CONFIG]"), "{config:?}");
    assert!(
        !help.contains("=]"),
        "an environment value is shown:\n{help}"
    );
    // The file keys are those of the settings, not the flags.
    assert!(config.contains("plugins_dir"), "{config:?}");
    let check = find("--check-config");
    assert!(
        prose(check).len() > 10,
        "--check-config has no help: {check:?}"
    );
    assert!(
        !help.contains("hunter2"),
        "the notify token is shown:\n{help}"
    );
}

#[test]
fn short_help_names_every_option_too() {
    let output = Command::new(rohrpost_tests::build().host())
        .arg("-h")
        .env_clear()
        .output()
        .expect("cannot run rohrpost -h");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("-h is UTF-8");
    for (flag, text) in options(&help) {
        if flag == "--help" || flag == "--version" {
            continue;
        }
        assert!(
            !prose(&text).is_empty(),
            "{flag} has no help in -h:\n{help}"
        );
    }
    for setting in documented_settings() {
        assert!(help.contains(&format!("--{} ", setting.flag)), "{help}");
    }
}

/// A host serving the subscriptions plugin configured with `table`.
async fn subscriptions(table: &str) -> Host {
    let config = format!("[plugins.subscriptions]\n{table}\n");
    let host = Host::start_with_config(&["ping", "subscriptions"], &config, &[]).unwrap();
    host.wait_for_log(&["event=\"loaded\"", "plugin=subscriptions"], T)
        .await
        .unwrap();
    host
}

/// `/api/plugins` once it lists a rejected file.
async fn rejected(host: &Host) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (status, body) = get(&host.addr, "/api/plugins").await.unwrap();
        assert_eq!(status, 200);
        let value: Value = serde_json::from_str(&body).unwrap();
        let list = value["plugins"].as_array().cloned().unwrap_or_default();
        if let Some(entry) = list.into_iter().find(|p| p["status"] == "rejected") {
            return entry;
        }
        assert!(Instant::now() < deadline, "nothing rejected: {value:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn subscriptions_without_an_auth_setting_refuse_to_load() {
    for config in [None, Some("[plugins.subscriptions]\n")] {
        let host = match config {
            None => Host::start(&["ping", "subscriptions"]).unwrap(),
            Some(config) => {
                Host::start_with_config(&["ping", "subscriptions"], config, &[]).unwrap()
            }
        };
        let entry = rejected(&host).await;
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert!(
            entry["file"]
                .as_str()
                .unwrap_or_default()
                .ends_with("libsubscriptions.so")
                && reason.contains("'auth' is not set")
                && reason.contains("auth = \"off\""),
            "{entry}"
        );
        host.wait_for_log(&["event=\"rejected\"", "'auth' is not set"], T)
            .await
            .unwrap();
        // Nobody joins anything.
        let mut c = host.connect().await.unwrap();
        let reply = c
            .request(r#"{"id":1,"type":"subscribe","data":{"type":"collection","id":1}}"#)
            .await
            .unwrap();
        assert_eq!(
            reply,
            json!({"id": 1, "type": "subscribe", "error": "Unknown message type 'subscribe'."})
        );
    }
}

#[tokio::test]
async fn auth_off_is_possible_with_a_warning_in_the_log() {
    let host = subscriptions("auth = \"off\"").await;
    let line = host
        .wait_for_log(&["WARN", "plugin=subscriptions", "anyone may subscribe"], T)
        .await
        .unwrap();
    assert!(
        line.contains("auth = \\\"off\\\"") || line.contains("auth = \"off\""),
        "{line}"
    );
    let mut c = host.connect().await.unwrap();
    let reply = c
        .request(r#"{"id":1,"type":"subscribe","data":{"type":"collection","id":1}}"#)
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!({"id": 1, "type": "subscribe", "data": {"group": "collection-1"}})
    );
}

#[tokio::test]
async fn an_unauthorized_request_learns_nothing_but_access_denied() {
    let host = subscriptions("auth = \"tokens\"\ntokens = [\"alpha\"]").await;
    let mut c = host.connect().await.unwrap();
    let denied = |id: u64, kind: &str| json!({"id": id, "type": kind, "error": "ACCESS_DENIED"});
    // Invalid data, without a token or with a wrong one: the same answer as
    // valid data, not the validation rules.
    let requests = [
        r#"{"id":1,"type":"subscribe"}"#,
        r#"{"id":2,"type":"subscribe","data":5}"#,
        r#"{"id":3,"type":"subscribe","data":{"type":"a/b","id":1}}"#,
        r#"{"id":4,"type":"subscribe","auth_jwt":"wrong","data":{"type":"collection","id":1.5}}"#,
        r#"{"id":5,"type":"subscribe","auth_jwt":"wrong","data":{"type":"collection","id":1}}"#,
    ];
    for (n, request) in requests.iter().enumerate() {
        let id = n as u64 + 1;
        assert_eq!(
            c.request(request).await.unwrap(),
            denied(id, "subscribe"),
            "{request}"
        );
    }
    // With the token, the same invalid data gets the rules.
    let reply = c
        .request(r#"{"id":6,"type":"subscribe","auth_jwt":"alpha","data":5}"#)
        .await
        .unwrap();
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Invalid subscription data"),
        "{reply}"
    );
    // Leaving is authorized too.
    for request in [
        r#"{"id":7,"type":"unsubscribe","data":{"type":"collection","id":1}}"#,
        r#"{"id":7,"type":"unsubscribe","auth_jwt":"wrong","data":{"type":"collection","id":1}}"#,
        r#"{"id":7,"type":"unsubscribe","data":5}"#,
    ] {
        assert_eq!(
            c.request(request).await.unwrap(),
            denied(7, "unsubscribe"),
            "{request}"
        );
    }
    let reply = c
        .request(r#"{"id":8,"type":"unsubscribe","auth_jwt":"alpha","data":{"type":"collection","id":1}}"#)
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!({"id": 8, "type": "unsubscribe", "data": {"group": "collection-1"}})
    );
}

#[tokio::test]
async fn group_names_outside_the_channels_rule_are_refused() {
    let host = subscriptions("auth = \"off\"").await;
    let mut c = host.connect().await.unwrap();
    let long = "t".repeat(200);
    let cases = [
        json!({"type": "a/b", "id": 1}),
        json!({"type": "..", "id": "../../etc"}),
        json!({"type": "collection", "id": "a\nb"}),
        json!({"type": "collection", "id": "a\u{0}b"}),
        json!({"type": "collection item", "id": 1}),
        json!({"type": long, "id": 1}),
        json!({"type": "collection", "id": "9".repeat(98)}),
    ];
    for (kind, n) in [("subscribe", 1), ("unsubscribe", 2)] {
        for data in &cases {
            let request = json!({"id": n, "type": kind, "data": data}).to_string();
            let reply = c.request(&request).await.unwrap();
            let error = reply["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("Invalid subscription data")
                    && error.contains("group name")
                    && error.contains("shorter than 100 characters"),
                "{request} -> {reply}"
            );
            // The answer does not echo the name.
            assert!(error.len() < 300, "{reply}");
        }
    }
    // The longest name allowed: 99 characters.
    let id = "9".repeat(88);
    let request = json!({"id": 3, "type": "subscribe", "data": {"type": "collection", "id": id}});
    let reply = c.request(&request.to_string()).await.unwrap();
    assert_eq!(reply["data"]["group"], format!("collection-{id}"));
    c.ping_ok(4).await.unwrap();
}

/// The host's log lines from the `from`-th on that contain `text`.
fn lines_with(host: &Host, from: usize, text: &str) -> Vec<String> {
    host.log()
        .into_iter()
        .skip(from)
        .filter(|line| line.contains(text))
        .collect()
}

#[tokio::test]
async fn a_thousand_bad_tokens_make_a_few_log_lines() {
    let host = Host::start_with(&["ping"], &["--notify-token", "right"]).unwrap();
    let before = host.log().len();
    let body = r#"{"model":"M","pk":1,"event":"update"}"#;
    for batch in 0..20 {
        let requests = (0..50).map(|n| {
            let token = format!("wrong-{batch}-{n}");
            let host = &host;
            async move { host.notify(Some(&token), body).await }
        });
        for answer in futures_util::future::join_all(requests).await {
            assert_eq!(answer.unwrap().0, 401);
        }
    }
    // The right token still works, and every refusal was answered.
    let (status, answer) = host.notify(Some("right"), body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let refused = lines_with(&host, before, "notification refused");
    assert!(
        !refused.is_empty() && refused.len() <= 20,
        "{} refusal lines",
        refused.len()
    );
    host.wait_for_log(&["WARN", "kind=\"notify_bad_token\"", "suppressing"], T)
        .await
        .unwrap();
    let logged = host.log().len() - before;
    assert!(logged <= 40, "the attack logged {logged} lines");

    // After the interval, the next refusal says how many were suppressed.
    tokio::time::sleep(LOG_LIMIT_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(host.notify(Some("wrong"), body).await.unwrap().0, 401);
    let line = host
        .wait_for_log(&["kind=\"notify_bad_token\"", "were suppressed"], T)
        .await
        .unwrap();
    let suppressed: u64 = line
        .split("suppressed=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    assert!(suppressed >= 900, "{line}");
}

#[tokio::test]
async fn a_thousand_handler_errors_make_a_few_log_lines() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let before = host.log().len();
    for id in 0..1000 {
        let reply = c
            .request(&format!(r#"{{"id":{id},"type":"fail"}}"#))
            .await
            .unwrap();
        assert_eq!(reply["error"], "something went wrong", "{reply}");
    }
    let errors = lines_with(&host, before, "handler returned an error");
    assert!(
        !errors.is_empty() && errors.len() <= 20,
        "{} error lines",
        errors.len()
    );
    host.wait_for_log(&["kind=\"handler_error\"", "suppressing"], T)
        .await
        .unwrap();
    let warnings = lines_with(&host, before, "WARN").len();
    assert!(warnings <= 40, "{warnings} warnings");
    // Every call is still counted.
    let (_, metrics) = get(&host.addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"rohrpost_messages_total{type="fail",outcome="error"} 1000"#),
        "{metrics}"
    );
}
