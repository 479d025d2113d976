//! `rohrpost --check-config FILE`: each plugin of the plugins directory
//! that has a table in FILE is asked for its verdict on it, in a jailed
//! worker as loading does, so that an operator sees a refused table (an
//! unknown key, a wrong type) before the server starts, not at load.

use std::{collections::BTreeMap, path::Path};

use crate::{
    config::{Grants, Sandbox},
    plugins::{
        isolation::{channel::Starting, jail::Spec, supervisor::START_TIMEOUT, WorkerLimits},
        library,
    },
};

/// What the check found wrong about one plugin or file.
#[derive(Debug)]
pub(crate) struct Problem {
    /// The plugin whose table it is about, once its library said its name.
    pub plugin: Option<String>,
    /// The library file it came from.
    pub file: String,
    pub text: String,
}

/// Asks every plugin in `dir` that has one of `tables` (JSON text, by
/// plugin name) whether it accepts it.
pub(crate) async fn tables(
    dir: &Path,
    tables: &BTreeMap<String, String>,
    granted_files: &BTreeMap<String, (String, Grants)>,
    sandbox: Sandbox,
) -> Result<Vec<Problem>, std::io::Error> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "so") && path.is_file())
        .collect();
    files.sort();
    let mut problems = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let problem = |plugin: Option<&str>, text: String| Problem {
            plugin: plugin.map(str::to_owned),
            file: file.clone(),
            text,
        };
        let loaded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| library::sealed_copy(&path, &bytes).map_err(|e| e.to_string()));
        let library = match loaded {
            Ok(library) => library,
            Err(why) => {
                problems.push(problem(None, why));
                continue;
            }
        };
        let spec = Spec {
            sandbox,
            grants: granted_files
                .get(&file)
                .map(|(_, grants)| grants.clone())
                .unwrap_or_default(),
        };
        let limits = WorkerLimits {
            max_effects: 1,
            ..WorkerLimits::default()
        };
        let mut starting = match Starting::spawn(&library, limits, &spec, START_TIMEOUT).await {
            Ok(starting) => starting,
            Err(why) => {
                problems.push(problem(None, format!("cannot be loaded: {why}")));
                continue;
            }
        };
        let name = starting.manifest.name.clone();
        let Some(table) = tables.get(&name) else {
            continue;
        };
        match starting.configure(table, START_TIMEOUT).await {
            Ok(Ok(_)) => {}
            Ok(Err(refused)) => problems.push(problem(Some(&name), refused)),
            Err(why) => problems.push(problem(Some(&name), why.to_string())),
        }
    }
    Ok(problems)
}

/// The line (from 1) of `key` in the `[plugins.<plugin>]` table of the
/// TOML `text`, or of the table's header when the key is not found there.
pub(crate) fn line_of(text: &str, plugin: &str, key: Option<&str>) -> Option<usize> {
    let header = format!("plugins.{plugin}");
    let mut in_table = false;
    let mut header_line = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim().trim_matches(|c| c == '[' || c == ']');
            in_table = section == header;
            if in_table && header_line.is_none() {
                header_line = Some(number + 1);
            }
            continue;
        }
        if in_table {
            if let Some(key) = key {
                let named = line
                    .strip_prefix(key)
                    .or_else(|| line.strip_prefix(&format!("\"{key}\"")));
                if named.is_some_and(|rest| rest.trim_start().starts_with('=')) {
                    return Some(number + 1);
                }
            }
        }
    }
    header_line
}

/// The key a plugin's refusal names: serde's "unknown field `tokn`",
/// "missing field `auth`" and the like.
pub(crate) fn key_in(refusal: &str) -> Option<&str> {
    let start = refusal.find('`')? + 1;
    let len = refusal[start..].find('`')?;
    Some(&refusal[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_of_a_refused_key_is_found_in_its_table() {
        let text = "listen = \"127.0.0.1:8000\"\n\n[plugins.other]\ntokn = 1\n\n[plugins.refapp]\nauth = \"tokens\"\ntokn = [\"a\"]\n";
        assert_eq!(
            key_in("unknown field `tokn`, expected one of `auth`, `tokens`"),
            Some("tokn")
        );
        assert_eq!(line_of(text, "refapp", Some("tokn")), Some(8));
        assert_eq!(line_of(text, "refapp", Some("missing")), Some(6));
        assert_eq!(line_of(text, "refapp", None), Some(6));
        assert_eq!(line_of(text, "absent", None), None);
    }
}
