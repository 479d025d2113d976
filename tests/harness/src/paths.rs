//! Where the build puts things: the workspace, cargo's target directory and
//! the file name a plugin crate's library gets.

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `tests/harness/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Cargo's target directory of the workspace: `$CARGO_TARGET_DIR` (relative
/// to the workspace when relative), else `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                workspace().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| workspace().join("target"))
}

/// The file name of a `cdylib` crate's library, e.g. `libping.so` for
/// `ping` and `libfixture_testkit.so` for `fixture-testkit`.
pub fn library_file_name(crate_name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_use_underscores() {
        let name = library_file_name("fixture-testkit");
        assert!(name.contains("fixture_testkit"), "{name}");
        assert!(name.ends_with(std::env::consts::DLL_SUFFIX));
    }

    #[test]
    fn the_workspace_holds_this_crate() {
        assert!(workspace().join("tests/harness/Cargo.toml").is_file());
    }
}
