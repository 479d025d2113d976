//! Writing plugins: a plugin crate outside the workspace, the scaffold, the dev loop.
