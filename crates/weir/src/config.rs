//! The configuration file: `weir.toml` (or `--config FILE` / `WEIR_CONFIG`).
//!
//! Its settings become the defaults of the flags they name, so the order of
//! precedence is: built-in defaults < the file < `WEIR_*` environment <
//! flags. Keys are flag names (`batch-size` or `batch_size`); top-level
//! keys apply to every command that has such a flag, a table applies to
//! one command (`[up]`, `[collect]`, `[stream.synth]`) and wins over the
//! top level:
//!
//! ```toml
//! data = "/var/lib/weir"
//! fsync = "every 5ms"
//!
//! [up]
//! gpus = 128
//! listen = "0.0.0.0:8080"
//!
//! [collect]
//! sink = "postgres://weir@db:5432/weir"
//! batch-size = 2000
//! ```
//!
//! A key no command knows, or one a table's command does not have, is an
//! error naming it: a typo never passes silently.

use std::path::{Path, PathBuf};

use clap::{ArgAction, Command, CommandFactory, FromArgMatches};

use crate::Cli;

/// The file read when neither `--config` nor `WEIR_CONFIG` names one.
const DEFAULT_FILE: &str = "weir.toml";

/// Parses the command line with the configuration file's settings as
/// defaults. A bad file is a one-line error (exit 2); a bad command line
/// exits as clap does.
pub(crate) fn parse() -> Result<Cli, String> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = Cli::command();
    let command = match config_file(&args) {
        Some((path, required)) => match std::fs::read_to_string(&path) {
            Ok(text) => apply_file(command, &path, &text)?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => command,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        },
        None => command,
    };
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// The file to read and whether it must exist: `--config FILE` or
/// `--config=FILE`, else `WEIR_CONFIG`, else `./weir.toml` if present.
fn config_file(args: &[std::ffi::OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = arg.strip_prefix("--config=") {
            return Some((PathBuf::from(p), true));
        }
    }
    match std::env::var_os("WEIR_CONFIG") {
        Some(p) if !p.is_empty() => Some((PathBuf::from(p), true)),
        _ => Some((PathBuf::from(DEFAULT_FILE), false)),
    }
}

/// `command` with the file's settings as defaults.
fn apply_file(command: Command, path: &Path, text: &str) -> Result<Command, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{}: {}", path.display(), e.message()))?;
    apply(command, &table, &[]).map_err(|e| format!("{}: {e}", path.display()))
}

/// Applies a table to `command` (reached through `at`): plain keys to every
/// flag of that name in it and below, then sub-tables to the subcommands
/// they name.
fn apply(mut command: Command, table: &toml::Table, at: &[&str]) -> Result<Command, String> {
    let mut plain = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(_) => {}
            value => plain.push((key.replace('_', "-"), setting(key, value)?)),
        }
    }
    for (key, value) in &plain {
        if key == "config" {
            return Err("`config` cannot be set in a settings file".into());
        }
        let (next, used) = set_default(command, key, value, at.is_empty())?;
        command = next;
        if !used {
            let why = if at.is_empty() {
                format!("no weir command has a --{key} flag")
            } else {
                format!("weir {} has no --{key} flag", at.join(" "))
            };
            return Err(format!("unknown setting `{key}`: {why}"));
        }
    }
    for (key, value) in table {
        let toml::Value::Table(sub) = value else {
            continue;
        };
        if command.find_subcommand(key).is_none() {
            let place = if at.is_empty() {
                "weir".to_string()
            } else {
                format!("weir {}", at.join(" "))
            };
            return Err(format!(
                "unknown table [{key}]: {place} has no command `{key}`"
            ));
        }
        let mut path = at.to_vec();
        path.push(key);
        let mut failed = None;
        command = command.mut_subcommand(key, |c| match apply(c.clone(), sub, &path) {
            Ok(c) => c,
            Err(e) => {
                failed = Some(e);
                c
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(command)
}

/// A file value: one, or a list for a flag that takes several.
#[derive(Debug, Clone, PartialEq)]
enum Setting {
    One(String),
    Many(Vec<String>),
}

/// Sets `value` as the default of every `--key` flag in `command` and its
/// subcommands (at the top level, not the benches', whose defaults are
/// fresh scratch space); says whether there was one.
fn set_default(
    mut command: Command,
    key: &str,
    value: &Setting,
    top_level: bool,
) -> Result<(Command, bool), String> {
    let mut used = false;
    let found = command
        .get_arguments()
        .find(|a| a.get_long() == Some(key))
        .map(|a| {
            (
                a.get_id().clone(),
                matches!(a.get_action(), ArgAction::Append),
                a.get_value_delimiter(),
                a.is_hide_env_values_set(),
            )
        });
    if let Some((id, many, delimiter, secret)) = found {
        let values = match (value, many, delimiter) {
            (Setting::One(v), _, _) => vec![v.clone()],
            (Setting::Many(vs), true, _) => vs.clone(),
            (Setting::Many(vs), false, Some(d)) => vec![vs.join(&d.to_string())],
            (Setting::Many(_), false, None) => {
                return Err(format!("`{key}` takes one value, not a list"));
            }
        };
        command = command.mut_arg(id, |a| {
            // A secret given in the file is not shown by --help.
            a.default_values(values)
                .required(false)
                .hide_default_value(secret)
        });
        used = true;
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|name| !(top_level && name == "bench"))
        .collect();
    for name in names {
        let mut outcome = Ok(false);
        command = command.mut_subcommand(&name, |c| {
            match set_default(c.clone(), key, value, top_level) {
                Ok((c, u)) => {
                    outcome = Ok(u);
                    c
                }
                Err(e) => {
                    outcome = Err(e);
                    c
                }
            }
        });
        used |= outcome?;
    }
    Ok((command, used))
}

/// A setting's value as the text a flag would take.
fn setting(key: &str, value: &toml::Value) -> Result<Setting, String> {
    let one = |v: &toml::Value| -> Result<String, String> {
        Ok(match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(format!(
                    "`{key}`: expected a string, number, boolean or list of them"
                ));
            }
        })
    };
    match value {
        toml::Value::Array(items) => Ok(Setting::Many(
            items.iter().map(one).collect::<Result<_, _>>()?,
        )),
        v => Ok(Setting::One(one(v)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(file: &str, args: &[&str]) -> Result<Cli, String> {
        let command = apply_file(Cli::command(), Path::new("weir.toml"), file)?;
        let matches = command
            .try_get_matches_from(std::iter::once("weir").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    fn debug(cli: &Cli) -> String {
        format!("{cli:?}")
    }

    #[test]
    fn the_file_sets_defaults_and_flags_win() {
        let file = "data = \"/srv/weir\"\n[up]\ngpus = 128\nlisten = \"0.0.0.0:9000\"\n";
        let cli = parse_with(file, &["up"]).unwrap();
        let d = debug(&cli);
        assert!(d.contains("gpus: 128"), "{d}");
        assert!(d.contains("\"0.0.0.0:9000\""), "{d}");
        assert!(d.contains("/srv/weir"), "{d}");
        let cli = parse_with(file, &["up", "--gpus", "8"]).unwrap();
        assert!(debug(&cli).contains("gpus: 8"), "a flag wins over the file");
    }

    #[test]
    fn lists_and_nested_tables_apply() {
        let file = "[collect]\ntopic = [\"telemetry\", \"resources\"]\nbatch_size = 50\n[stream.synth]\nhosts = 3\n";
        let d = debug(&parse_with(file, &["collect"]).unwrap());
        assert!(d.contains("\"telemetry\", \"resources\""), "{d}");
        assert!(d.contains("batch_size: 50"), "{d}");
        let d = debug(&parse_with(file, &["stream", "synth"]).unwrap());
        assert!(d.contains("hosts: 3"), "{d}");
    }

    #[test]
    fn unknown_keys_and_tables_are_errors() {
        let e = parse_with("gpuz = 3\n", &["up"]).unwrap_err();
        assert!(e.contains("unknown setting `gpuz`"), "{e}");
        let e = parse_with("[collect]\ngpus = 3\n", &["collect"]).unwrap_err();
        assert!(
            e.contains("weir collect has no a --gpus flag") || e.contains("weir collect has no"),
            "{e}"
        );
        let e = parse_with("[upp]\ngpus = 3\n", &["up"]).unwrap_err();
        assert!(e.contains("unknown table [upp]"), "{e}");
        let e = parse_with("gpus = \n", &["up"]).unwrap_err();
        assert!(e.starts_with("weir.toml:"), "{e}");
    }

    #[test]
    fn lists_fill_repeatable_flags_and_single_flags_refuse_them() {
        let file = "[monitor]\nlabel = [\"service=weir\", \"env=prod\"]\npid = [1, 2]\n";
        let d = debug(&parse_with(file, &["monitor"]).unwrap());
        assert!(
            d.contains("labels: [(\"service\", \"weir\"), (\"env\", \"prod\")]"),
            "{d}"
        );
        assert!(d.contains("pids: [1, 2]"), "{d}");
        let e = parse_with("[up]\ngpus = [1, 2]\n", &["up"]).unwrap_err();
        assert!(e.contains("`gpus` takes one value"), "{e}");
    }

    #[test]
    fn top_level_keys_leave_the_benches_alone() {
        let d = debug(&parse_with("data = \"/srv/weir\"\n", &["bench", "queue"]).unwrap());
        assert!(!d.contains("/srv/weir"), "{d}");
        let e = parse_with("config = \"x.toml\"\n", &["up"]).unwrap_err();
        assert!(e.contains("`config` cannot be set"), "{e}");
    }

    #[test]
    fn a_bad_value_in_the_file_fails_like_a_bad_flag() {
        let e = parse_with("[up]\ngpus = \"many\"\n", &["up"]).unwrap_err();
        assert!(e.contains("many"), "{e}");
    }
}
