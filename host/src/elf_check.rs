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
pub enum ElfError {
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
pub fn check(bytes: &[u8]) -> Result<(), ElfError> {
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

    #[test]
    fn accepts_this_test_binary_prefix_rules() {
        // The running test executable is an ELF file (a PIE executable is
        // type 3 as well); every truncation of it must be caught.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if check(&exe).is_ok() {
            for cut in [exe.len() / 100, exe.len() / 2, exe.len() - 1] {
                assert!(check(&exe[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
}
