//! A plugin file made a library: checked as a complete ELF file, then
//! copied to a fresh private shadow file, because `dlopen` of a path it
//! already has returns the old code. In this process the copy is opened
//! with `lib_header_from_path` + `init_root_module` (never
//! `RootModule::load_from_*`, which caches one module per type forever);
//! for a worker it is handed over as an open file.

use std::{fs::File, path::Path};

use abi_stable::library::lib_header_from_path;
use rohrpost_plugin_api::abi::PluginModRef;

use crate::{plugins::files::elf_check, plugins::files::shadow::ShadowDir, plugins::manifest::*};

/// Checks the bytes, loads them from a fresh shadow copy, and checks the
/// plugin interface.
pub(crate) fn open(
    file: &Path,
    bytes: &[u8],
    shadow: &ShadowDir,
) -> Result<PluginModRef, LoadError> {
    #[cfg(target_os = "linux")]
    elf_check::check(bytes)?;

    let stem = file
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
    let opened = shadow.with_copy(&stem, bytes, lib_header_from_path)?;
    opened
        .and_then(|header| header.init_root_module::<PluginModRef>())
        .map_err(library_error)
}

/// Checks the bytes and writes them to a fresh shadow copy, opened for
/// reading: what a worker process loads the plugin from. The copy's name
/// is removed at once; the open file keeps its content for every worker
/// the plugin's version will need, and nobody can replace it.
pub(crate) fn shadow_file(
    file: &Path,
    bytes: &[u8],
    shadow: &ShadowDir,
) -> Result<File, LoadError> {
    #[cfg(target_os = "linux")]
    elf_check::check(bytes)?;

    let stem = file
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
    shadow
        .with_copy(&stem, bytes, |path| File::open(path))?
        .map_err(LoadError::Read)
}
