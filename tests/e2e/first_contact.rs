//! What a new user meets first, against the real binary: `rohrpost --help`
//! explains every setting.

use std::process::Command;

use rohrpost_host::config::SETTINGS;

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
    for setting in SETTINGS {
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
    for setting in SETTINGS {
        assert!(help.contains(&format!("--{} ", setting.flag)), "{help}");
    }
}
