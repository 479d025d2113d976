//! A plugin file made a library: checked as a complete ELF file, then
//! copied to a fresh private shadow file, because `dlopen` of a path it
//! already has returns the old code. In this process the copy is opened
//! with `lib_header_from_path` + `init_root_module` (never
//! `RootModule::load_from_*`, which caches one module per type forever);
//! a worker gets a sealed copy in memory instead, as an open file.

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

/// Checks the bytes and copies them into a sealed memory file: what a
/// worker process loads the plugin from, for every worker the plugin's
/// version will need. No one can write it (its seals forbid it, to its
/// owner too), and it names no directory of the server's.
pub(crate) fn sealed_copy(file: &Path, bytes: &[u8]) -> Result<File, LoadError> {
    #[cfg(target_os = "linux")]
    elf_check::check(bytes)?;
    let name = file
        .file_name()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
    let name = std::ffi::CString::new(name.replace('\0', "")).unwrap_or_default();
    memfd(&name, bytes).map_err(LoadError::Read)
}

fn memfd(name: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<File> {
    use std::{io::Write, os::fd::FromRawFd};
    // SAFETY: memfd_create reads the name; the descriptor it returns is
    // this process's, and owned by the File from here on.
    let mut memory = unsafe {
        let fd = libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        File::from_raw_fd(fd)
    };
    memory.write_all(bytes)?;
    // F_SEAL_FUTURE_WRITE, not F_SEAL_WRITE: the same for a file that no
    // one maps for writing (this one), without F_SEAL_WRITE's wait for
    // page references, which fails with EBUSY while the pages just written
    // sit in another CPU's LRU batch.
    let seals =
        libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE;
    // SAFETY: fcntl on a descriptor this process owns.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&memory),
            libc::F_ADD_SEALS,
            seals,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(memory)
}

#[cfg(test)]
mod sealed_tests {
    use std::io::{Read, Seek, Write};

    use super::memfd;

    #[test]
    fn a_sealed_copy_reads_back_and_cannot_be_written_grown_or_shrunk() {
        let mut copy = memfd(c"test", b"library bytes").expect("a sealed copy");
        let mut back = String::new();
        copy.rewind().unwrap();
        copy.read_to_string(&mut back).unwrap();
        assert_eq!(back, "library bytes");
        assert!(copy.write_all(b"trojan").is_err());
        assert!(copy.set_len(1).is_err());
        assert!(copy.set_len(1 << 20).is_err());
    }
}
