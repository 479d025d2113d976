//! The documentation's links: every relative link between the README,
//! CONTRIBUTING, CHANGELOG and docs/ names a file that exists, and every
//! `#anchor` a heading of that file (GitHub's rule: lower case, spaces to
//! dashes, punctuation dropped, repeats numbered).

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut files: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"]
        .iter()
        .map(|f| root.join(f))
        .chain([root.join("integrations/django/README.md")])
        .collect();
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a Markdown file outside code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut in_code = false;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            lines.push((n + 1, line));
        }
    }
    lines
}

fn slug(heading: &str) -> String {
    heading
        .replace('`', "")
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug = slug(line[hashes..].trim_end_matches('#'));
        let n = seen.entry(slug.clone()).or_default();
        anchors.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The targets of `[text](target)` links, outside inline code.
fn links(line: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            prose.push(c);
        }
    }
    prose
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split([')', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_link_between_the_documents_is_valid() {
    let root = root();
    let mut bad = Vec::new();
    let mut checked = 0;
    for file in documents() {
        let text = fs::read_to_string(&file).expect("a document");
        for (line_no, line) in prose_lines(&text) {
            for target in links(line) {
                if target.contains(':') && !target.starts_with('#') {
                    continue; // a URL
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().expect("a folder").join(path)
                };
                let at = format!(
                    "{}:{line_no}",
                    file.strip_prefix(&root).unwrap_or(&file).display()
                );
                if !dest.exists() {
                    bad.push(format!("{at}: no file {target}"));
                    continue;
                }
                if anchor.is_empty() {
                    continue;
                }
                let is_markdown = dest.extension().is_some_and(|e| e == "md");
                let found = is_markdown
                    && anchors(&fs::read_to_string(&dest).expect("a document")).contains(anchor);
                if !found {
                    bad.push(format!("{at}: no heading for {target}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} links were found");
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn headings_become_the_anchors_github_makes() {
    assert_eq!(
        slug("Keeping handlers in your backend"),
        "keeping-handlers-in-your-backend"
    );
    assert_eq!(slug("The contract, version 1"), "the-contract-version-1");
    assert_eq!(
        slug("`cargo xtask run`: what it does"),
        "cargo-xtask-run-what-it-does"
    );
    let twice = anchors("## Notes\n\n## Notes\n");
    assert!(
        twice.contains("notes") && twice.contains("notes-1"),
        "{twice:?}"
    );
    assert_eq!(links("see [a](b.md#c) and `[x](y)`"), ["b.md#c"]);
}
