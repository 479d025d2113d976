//! A structural check of a plugin file before `dlopen` sees it.
//!
//! `dlopen` trusts the file: a copy cut short maps segments past the end of
//! the file and the process dies of SIGBUS when the code is touched (seen
//! with a plugin truncated to 1% of its size), or it "loads" with parts
//! missing. So before loading, every segment and section the headers
//! describe must lie inside the file. Only ELF (Linux) is checked; other
//! platforms go straight to the loader.

use thiserror::Error;

/// Why a file is not a complete shared library.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ElfError {
    #[error("not an ELF file (no ELF magic)")]
    NotElf,
    #[error("unsupported ELF class or byte order")]
    Unsupported,
    #[error("not a shared library (ELF type {0})")]
    NotShared(u16),
    #[error("truncated: {what} ends at byte {end}, the file has {len} bytes")]
    Truncated { what: String, end: u64, len: u64 },
}

/// Checks that `bytes` hold a complete ELF shared object.
pub(crate) fn check(bytes: &[u8]) -> Result<(), ElfError> {
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    let wide = match bytes[4] {
        1 => false,
        2 => true,
        _ => return Err(ElfError::Unsupported),
    };
    if bytes[5] != 1 {
        // Big-endian: every platform we build for is little-endian.
        return Err(ElfError::Unsupported);
    }
    let r = Reader { bytes };
    let len = bytes.len() as u64;
    let header_len = if wide { 64 } else { 52 };
    fits(len, 0, header_len, "the ELF header")?;

    let e_type = r.u16(16)?;
    if e_type != 3 {
        return Err(ElfError::NotShared(e_type));
    }
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) = if wide {
        (
            r.u64(32)?,
            r.u64(40)?,
            r.u16(54)?,
            r.u16(56)?,
            r.u16(58)?,
            r.u16(60)?,
        )
    } else {
        (
            u64::from(r.u32(28)?),
            u64::from(r.u32(32)?),
            r.u16(42)?,
            r.u16(44)?,
            r.u16(46)?,
            r.u16(48)?,
        )
    };
    fits(
        len,
        phoff,
        u64::from(phentsize) * u64::from(phnum),
        "the program header table",
    )?;
    for i in 0..u64::from(phnum) {
        let at = phoff + i * u64::from(phentsize);
        let (offset, filesz) = if wide {
            (r.u64(at + 8)?, r.u64(at + 32)?)
        } else {
            (u64::from(r.u32(at + 4)?), u64::from(r.u32(at + 16)?))
        };
        fits(len, offset, filesz, &format!("segment {i}"))?;
    }
    if shoff != 0 {
        fits(
            len,
            shoff,
            u64::from(shentsize) * u64::from(shnum),
            "the section header table",
        )?;
        for i in 0..u64::from(shnum) {
            let at = shoff + i * u64::from(shentsize);
            let kind = r.u32(at + 4)?;
            const SHT_NOBITS: u32 = 8;
            if kind == SHT_NOBITS {
                continue;
            }
            let (offset, size) = if wide {
                (r.u64(at + 24)?, r.u64(at + 32)?)
            } else {
                (u64::from(r.u32(at + 16)?), u64::from(r.u32(at + 20)?))
            };
            fits(len, offset, size, &format!("section {i}"))?;
        }
    }
    Ok(())
}

fn fits(len: u64, offset: u64, size: u64, what: &str) -> Result<(), ElfError> {
    let end = offset.saturating_add(size);
    if end > len {
        return Err(ElfError::Truncated {
            what: what.to_owned(),
            end,
            len,
        });
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn slice<const N: usize>(&self, at: u64) -> Result<[u8; N], ElfError> {
        let len = self.bytes.len() as u64;
        let start = usize::try_from(at).map_err(|_| truncated(at, len))?;
        self.bytes
            .get(start..start.saturating_add(N))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| truncated(at + N as u64, len))
    }
    fn u16(&self, at: u64) -> Result<u16, ElfError> {
        self.slice(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: u64) -> Result<u32, ElfError> {
        self.slice(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: u64) -> Result<u64, ElfError> {
        self.slice(at).map(u64::from_le_bytes)
    }
}

fn truncated(end: u64, len: u64) -> ElfError {
    ElfError::Truncated {
        what: "a header field".to_owned(),
        end,
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_text_and_short_files() {
        assert_eq!(
            check(b"hello, this is not a library"),
            Err(ElfError::NotElf)
        );
        assert_eq!(check(b""), Err(ElfError::NotElf));
        assert!(matches!(
            check(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"),
            Err(ElfError::Truncated { .. })
        ));
    }

    /// The shared libraries this process has mapped (libc at least).
    #[cfg(target_os = "linux")]
    fn mapped_libraries() -> Vec<std::path::PathBuf> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut found: Vec<std::path::PathBuf> = maps
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .filter(|path| path.contains(".so"))
            .map(std::path::PathBuf::from)
            .filter(|path| path.is_file())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// `file` is accepted whole, and every cut of it is caught.
    #[cfg(target_os = "linux")]
    fn accepted_whole_and_rejected_cut(what: &str, file: &[u8]) {
        assert_eq!(check(file), Ok(()), "{what} is a complete shared object");
        for cut in [file.len() / 100, file.len() / 2, file.len() - 1] {
            assert!(check(&file[..cut]).is_err(), "{what} cut at {cut}");
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn accepts_shared_objects_and_rejects_every_truncation() {
        // The running test executable is an ELF file of type 3 too: rustc
        // links position-independent executables by default.
        let exe = std::env::current_exe().unwrap();
        accepted_whole_and_rejected_cut("the test executable", &std::fs::read(&exe).unwrap());
        let libraries = mapped_libraries();
        assert!(!libraries.is_empty(), "no shared library is mapped");
        for library in libraries {
            let bytes = std::fs::read(&library).unwrap();
            accepted_whole_and_rejected_cut(&library.display().to_string(), &bytes);
        }
    }
}
