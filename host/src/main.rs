//! `rohrpost`: the host's command line (see the library's `cli`).

fn main() -> std::process::ExitCode {
    rohrpost_host::main()
}
