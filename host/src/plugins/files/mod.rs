//! The files a plugin is loaded from, checked before any of its code runs:
//! who may write the plugins directory ([`permissions`]), whether a file is
//! a library for this machine ([`elf_check`]), and the private copy the
//! library is mapped from, so that the file can be replaced on disk while
//! the old version runs ([`shadow`]).

pub(crate) mod elf_check;
pub(crate) mod permissions;
pub(crate) mod shadow;
