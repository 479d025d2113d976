//! The end-to-end tests: the real host binary, real plugins, real
//! WebSockets. One module per area, all in this one test binary, so that
//! they are compiled and linked once; run one area with
//! `cargo test -p rohrpost-tests --test e2e hot_reload::`.
//!
//! The tests of every area run side by side in this one process, and
//! share what it has: no test changes its environment, current directory,
//! umask or signal dispositions, and the open-files limit is only ever
//! raised to the hard limit (`raise_fd_limit`). A server that needs other
//! settings gets them in its own process (e.g.
//! `Host::start_with_soft_open_files`). What every test needs is set up
//! once for all (`rohrpost_tests::build`, the Django environment).

mod admin;
mod attacks;
mod authoring;
mod bad_plugins;
mod before_upgrade;
mod behind_proxy;
mod bridge;
mod close_frames;
mod cluster;
mod compat;
mod compression;
mod conformance;
mod costly;
mod deploy_files;
mod django;
mod docs;
mod first_contact;
mod groups;
mod handlers;
mod hot_reload;
mod isolation;
mod limits;
mod operations;
mod plugin_api;
mod proxy;
mod redis_cluster;
mod redis_hostile;
mod redis_sentinel;
mod redis_stall;
mod redis_tls;
mod sandbox;
mod shadow;
mod stats;
mod status_page;
mod subscriptions;
