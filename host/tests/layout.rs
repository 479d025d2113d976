//! The layout of `host/src` as docs/ARCHITECTURE.md describes it, held
//! against the code: no file imports, directly or through others, a file
//! that imports it back; a folder imports only the folders below it; and
//! few files at the top. Read from the source text (`use crate::`,
//! `use super::`, `use self::` and `crate::` paths outside comments and
//! unit tests), the way a reader follows imports.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The folders (and top-level files) from the top of the data path down.
const ORDER: &[&str] = &[
    "main.rs",
    "lib.rs",
    "cli.rs",
    "server.rs",
    "admin",
    "net",
    "conn",
    "dispatch",
    "effects",
    "plugins",
    "groups",
    "socket",
    "telemetry",
    "config.rs",
    "base",
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("host/src is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `plugins/isolation/mod.rs` → `plugins::isolation`.
fn module_of(relative: &str) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its unit tests.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` statement names: `a::{b, c::{d}}` → `a::b`, `a::c::d`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{') {
        let inner = inner.strip_suffix('}').unwrap_or(inner);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(prefix, &inner[start..], out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    match tree.split_once("::") {
        Some((head, rest)) => expand(&format!("{prefix}{}::", head.trim()), rest, out),
        None => {
            let name = tree.split(" as ").next().unwrap_or(tree).trim();
            let path = if name == "self" || name == "*" {
                prefix.trim_end_matches("::").to_owned()
            } else {
                format!("{prefix}{name}")
            };
            out.push(path);
        }
    }
}

/// The paths a file's code names, absolute from the crate root.
fn named_paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let statement = &rest[..end];
        let mut named = Vec::new();
        expand("", statement, &mut named);
        for path in named {
            let mut parts: Vec<String> = path.split("::").map(|p| p.trim().to_owned()).collect();
            match parts.first().map(String::as_str) {
                Some("crate") => {
                    parts.remove(0);
                }
                Some("super") => {
                    parts.remove(0);
                    let mut base = me[..me.len().saturating_sub(1)].to_vec();
                    base.extend(parts);
                    parts = base;
                }
                Some("self") => {
                    parts.remove(0);
                    let mut base = me.to_vec();
                    base.extend(parts);
                    parts = base;
                }
                _ => continue,
            }
            paths.push(parts);
        }
    }
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + 7..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        paths.push(
            rest[..end]
                .split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    paths
}

struct Layout {
    files: Vec<String>,
    imports: BTreeMap<String, BTreeSet<String>>,
}

fn read_layout() -> Layout {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    source_files(&root, &mut paths);
    let files: Vec<String> = paths
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    let modules: BTreeMap<Vec<String>, String> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut imports = BTreeMap::new();
    for (file, path) in files.iter().zip(&paths) {
        let text = fs::read_to_string(path).expect("a source file");
        let me = module_of(file);
        let mut targets = BTreeSet::new();
        for named in named_paths(&code_of(&text), &me) {
            let target = (1..=named.len())
                .rev()
                .find_map(|n| modules.get(&named[..n]));
            if let Some(target) = target.filter(|t| *t != file) {
                targets.insert(target.clone());
            }
        }
        imports.insert(file.clone(), targets);
    }
    Layout { files, imports }
}

/// The groups of files that reach each other through imports (Tarjan).
fn circles(layout: &Layout) -> Vec<Vec<String>> {
    struct State<'a> {
        imports: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, file: &'a str) {
        let n = s.index.len();
        s.index.insert(file, n);
        s.low.insert(file, n);
        s.stack.push(file);
        for target in &s.imports[file] {
            let target = target.as_str();
            if !s.index.contains_key(target) {
                visit(s, target);
                let low = s.low[target].min(s.low[file]);
                s.low.insert(file, low);
            } else if s.stack.contains(&target) {
                let low = s.index[target].min(s.low[file]);
                s.low.insert(file, low);
            }
        }
        if s.low[file] == s.index[file] {
            let mut group = Vec::new();
            while let Some(top) = s.stack.pop() {
                group.push(top.to_owned());
                if top == file {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut state = State {
        imports: &layout.imports,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for file in &layout.files {
        if !state.index.contains_key(file.as_str()) {
            visit(&mut state, file);
        }
    }
    state.found
}

#[test]
fn the_reading_finds_the_imports_it_should() {
    let layout = read_layout();
    // Known arrows, so that a reading that finds nothing cannot pass.
    assert!(layout.imports["conn/mod.rs"].contains("dispatch/mod.rs"));
    assert!(layout.imports["dispatch/mod.rs"].contains("plugins/registry.rs"));
    assert!(layout.imports["effects/mod.rs"].contains("socket/outbound.rs"));
    assert!(layout.files.len() > 60, "{:?}", layout.files);
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let found = circles(&read_layout());
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn folders_import_only_the_folders_below_them() {
    let layout = read_layout();
    let rank = |file: &str| {
        let top = file.split('/').next().unwrap_or(file);
        ORDER
            .iter()
            .position(|o| *o == top)
            .unwrap_or_else(|| panic!("{top} is not in the layout's order"))
    };
    let upward: Vec<String> = layout
        .imports
        .iter()
        .flat_map(|(file, targets)| {
            targets
                .iter()
                .filter(|t| rank(t) < rank(file))
                .map(move |t| format!("{file} -> {t}"))
        })
        .collect();
    assert!(upward.is_empty(), "imports that run up: {upward:#?}");
}

#[test]
fn the_top_of_host_src_stays_small() {
    let top: Vec<String> = read_layout()
        .files
        .into_iter()
        .filter(|f| !f.contains('/'))
        .collect();
    assert!(top.len() <= 10, "{top:?}");
}
