//! The one harness the end-to-end tests (`rohrpost-tests`), the benchmarks
//! (`rohrpost-bench`) and `cargo xtask` share, so that they start the host,
//! install plugins and read the build the same way: [`paths`] (the target
//! directory, library file names), [`files`] (private temp dirs, installing
//! a plugin with modes the host accepts under any umask), [`process`] (a
//! server as a child process: its address from its log, its log lines,
//! stopping it), [`host`] (the host with a plugins directory of its own),
//! [`procfs`] (CPU time and memory of a process) and [`limits`] (the
//! open-files limit), [`redis_servers`] (Redis servers and clusters of
//! their own), and the Django test app ([`django_venv`], its
//! environment, and [`django_app`], its processes), and the Python
//! `websockets` client's environment ([`websockets_venv`]).

pub mod django_app;
pub mod django_venv;
pub mod error;
pub mod files;
pub mod host;
pub mod limits;
pub mod paths;
pub mod process;
pub mod procfs;
pub mod redis_servers;
pub mod venv;
pub mod websockets_venv;

pub use error::{Error, Result};
pub use files::{
    install, install_as, install_bytes, plugin_permissions, set_mode, TempDir, PLUGIN_MODE,
};
pub use host::{start_host, Host, HostSpec};
pub use limits::{ensure_open_files, raise_open_files_limit};
pub use paths::{library_file_name, target_dir, workspace};
pub use process::{Echo, Ended, Process, Watch};
pub use procfs::{children, cpu_time, is_running, status_kib, CpuMeter, CpuUse, Pid};
