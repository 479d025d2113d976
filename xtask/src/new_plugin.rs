//! `cargo xtask new-plugin NAME [--dir DIR]`: a plugin crate from the
//! template in `xtask/templates/plugin/`, which builds and answers at once.
//!
//! In `plugins/NAME` (the default) the crate is a workspace member, through
//! the `plugins/*` glob, and `cargo xtask run` builds and installs it with
//! the shipped plugins. Anywhere else it is a crate of its own: an empty
//! `[workspace]` table, plugin-api by absolute path, and a copy of the
//! workspace's `Cargo.lock`, so that its first build uses the dependency
//! versions plugin-api is tested with (cargo drops what it does not need).

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{args::Args, root, shown};

const CARGO_TOML: &str = include_str!("../templates/plugin/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("../templates/plugin/lib.rs.tmpl");
const GITIGNORE: &str = include_str!("../templates/plugin/gitignore.tmpl");

const USAGE: &str = "usage: cargo xtask new-plugin NAME [--dir DIR]";

/// Names a crate cannot have: Rust keywords (the library is named after
/// the crate) and the crates every program can already name.
const RESERVED: &str = "
    abstract alloc as async await become box break const continue core crate do dyn else enum
    extern false final fn for gen if impl in let loop macro match mod move mut override priv
    proc_macro pub ref return rohrpost_plugin_api self static std struct super test trait true
    try type typeof unsafe unsized use virtual where while yield";

/// The message type the scaffolded handler serves.
fn message_type(name: &str) -> String {
    format!("{name}.hello")
}

pub fn main(args: &[String]) -> Result<()> {
    let args = Args::parse(args, &["dir"], &[])?;
    let [name] = args.positional.as_slice() else {
        bail!("{USAGE}");
    };
    check_name(name)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workspace = root().canonicalize().context("cannot find the workspace")?;
    let shipped = workspace.join("plugins");
    let dir = match args.option("dir") {
        Some(dir) => resolve(&cwd.join(dir))?,
        None => shipped.join(name),
    };
    if dir.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; choose another name or --dir",
            shown(&dir, &cwd)
        );
    }
    let member = dir.parent() == Some(shipped.as_path());
    if !member && shipped.join(name).exists() {
        bail!("plugins/{name} already holds a plugin named '{name}': plugin names are unique in a server");
    }

    let api = workspace.join("plugin-api");
    let (plugin_api, workspace_table) = if member {
        ("rohrpost-plugin-api = { workspace = true }".to_owned(), "")
    } else {
        (
            format!(
                "rohrpost-plugin-api = {{ path = {} }}",
                toml_string(&api.to_string_lossy())
            ),
            "\n# A crate of its own, not a member of an enclosing workspace.\n[workspace]\n",
        )
    };
    let ty = message_type(name);
    let fill = |template: &str| render(template, name, &plugin_api, workspace_table);

    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    write(
        &dir.join("Cargo.toml"),
        &format!("{}\n", fill(CARGO_TOML).trim_end()),
    )?;
    write(&dir.join("src/lib.rs"), &fill(LIB_RS))?;
    if !member {
        write(&dir.join(".gitignore"), GITIGNORE)?;
        let lock = workspace.join("Cargo.lock");
        if lock.is_file() {
            std::fs::copy(&lock, dir.join("Cargo.lock"))
                .with_context(|| format!("cannot copy {}", lock.display()))?;
        }
    }

    print_next_steps(name, &ty, &dir, member, &cwd);
    Ok(())
}

/// A template with the plugin's name, message type, plugin-api dependency
/// and workspace table filled in.
fn render(template: &str, name: &str, plugin_api: &str, workspace_table: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{type}}", &message_type(name))
        .replace("{{plugin_api}}", plugin_api)
        .replace("{{workspace}}", workspace_table)
}

/// A crate name cargo and the host accept, and that reads well as a plugin
/// and message type name.
fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "invalid plugin name '{name}': use lowercase letters, digits, '-' and '_', \
             starting with a letter"
        );
    }
    let ident = name.replace('-', "_");
    if RESERVED.split_whitespace().any(|r| r == ident) {
        bail!("invalid plugin name '{name}': it is reserved in Rust");
    }
    Ok(())
}

/// `path` (absolute) without `.` and `..`, with symbolic links resolved in
/// the part that exists.
fn resolve(path: &Path) -> Result<PathBuf> {
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut missing = Vec::new();
    while existing.symlink_metadata().is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = existing
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", existing.display()))?;
    for name in missing.iter().rev() {
        out.push(name);
    }
    Ok(out)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn print_next_steps(name: &str, ty: &str, dir: &Path, member: bool, cwd: &Path) {
    let at = shown(dir, cwd);
    println!("Created the plugin crate '{name}' in {at}.");
    println!("Its handler, in {at}/src/lib.rs, answers the message type '{ty}'.");
    println!();
    println!("Next, from the rohrpost workspace:");
    let run_note = if member {
        "the server, with every plugin under plugins/ (this one too)"
    } else {
        "the server, watching plugins.d/"
    };
    let dev = format!("cargo xtask dev {at}");
    let width = dev.len().max("cargo xtask run".len());
    println!("  {:width$}  # {run_note}", "cargo xtask run");
    println!("  {dev:width$}  # in a second terminal: build, install into plugins.d/, again on every save");
    println!();
    println!("Then, in a browser console:");
    println!("  ws = new WebSocket(\"ws://127.0.0.1:8000/ws/rohrpost/\");");
    println!("  ws.onmessage = (e) => console.log(e.data);");
    println!(
        "  ws.onopen = () => ws.send(JSON.stringify({{ id: 1, type: \"{ty}\", data: {{ name: \"Ada\" }} }}));"
    );
    println!("  // {{\"id\":1,\"type\":\"{ty}\",\"data\":{{\"text\":\"Hello, Ada!\"}}}}");
    println!();
    println!(
        "Edit {at}/src/lib.rs and save: the running server serves the new version within seconds."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace with a new plugin in it still passes `cargo fmt
    /// --check`: the template is what rustfmt makes of it, for a short name
    /// and a long one.
    #[test]
    fn the_scaffold_is_as_rustfmt_formats_it() {
        let longest = format!("p{}", "-x".repeat(31));
        assert!(check_name(&longest).is_ok() && longest.len() >= 63);
        for name in ["hello", "a-rather-long-plugin-name_for_the_lines", &longest] {
            let source = render(LIB_RS, name, "", "");
            let dir = std::env::temp_dir()
                .join(format!("rohrpost-scaffold-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temp dir");
            let file = dir.join("lib.rs");
            std::fs::write(&file, &source).expect("the rendered file");
            let out = std::process::Command::new("rustfmt")
                .args(["--edition", "2021", "--check"])
                .arg(&file)
                .output()
                .expect("rustfmt runs");
            let _ = std::fs::remove_dir_all(&dir);
            assert!(
                out.status.success(),
                "{name}: rustfmt would change the scaffold:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
