//! Command-line arguments of the commands that take options: positionals,
//! `--flag`, and `--option VALUE` or `--option=VALUE`.

use std::collections::HashMap;

use anyhow::{bail, Result};

/// Parsed arguments.
pub struct Args {
    pub positional: Vec<String>,
    options: HashMap<&'static str, String>,
    flags: Vec<&'static str>,
}

impl Args {
    /// Parses `args`, accepting the options (which take a value) and flags
    /// named here, without their leading dashes.
    pub fn parse(
        args: &[String],
        options: &[&'static str],
        flags: &[&'static str],
    ) -> Result<Args> {
        let mut parsed = Args {
            positional: Vec::new(),
            options: HashMap::new(),
            flags: Vec::new(),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Some(name) = arg.strip_prefix("--") else {
                parsed.positional.push(arg.clone());
                continue;
            };
            let (name, inline) = match name.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (name, None),
            };
            if let Some(option) = options.iter().find(|o| **o == name) {
                let value = match inline.or_else(|| rest.next().cloned()) {
                    Some(value) => value,
                    None => bail!("--{name} needs a value"),
                };
                parsed.options.insert(option, value);
            } else if let Some(flag) = flags.iter().find(|f| **f == name) {
                if inline.is_some() {
                    bail!("--{name} takes no value");
                }
                parsed.flags.push(flag);
            } else {
                bail!("unknown option --{name}");
            }
        }
        Ok(parsed)
    }

    /// The value of an option, if given.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// Whether a flag was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}
