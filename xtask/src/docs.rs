//! `cargo xtask docs [--check]`: the CLI reference, `docs/cli.md`, rendered from the clap
//! definition of the commands, so it cannot disagree with `--help`; and the commands the
//! documentation shows, parsed by the very command lines they name.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use clap::CommandFactory as _;

/// The generated file, relative to the workspace root.
const OUTPUT: &str = "docs/cli.md";

/// The documents whose shell examples are checked.
pub(crate) const DOCUMENTS: [&str; 3] = ["README.md", "docs/operators.md", "charts/README.md"];

pub(crate) fn run(check: bool) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    check_commands(&root)?;
    let rendered = render(&nico_identity_cli::Cli::command());
    let path = root.join(OUTPUT);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == rendered {
        eprintln!("{OUTPUT} is up to date");
        return Ok(());
    }
    if check {
        bail!("{OUTPUT} is out of date with the CLI: run `cargo xtask docs` and commit");
    }
    std::fs::write(&path, rendered).with_context(|| format!("failed to write {OUTPUT}"))?;
    eprintln!("wrote {OUTPUT}");
    Ok(())
}

/// Every `nico-identity`, `cargo run -- ...` and `cargo xtask` command in the documents'
/// `sh` blocks parses with the clap definitions it names.
fn check_commands(root: &std::path::Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for document in DOCUMENTS {
        let text = std::fs::read_to_string(root.join(document))
            .with_context(|| format!("failed to read {document}"))?;
        for words in shell_commands(&text) {
            let outcome = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["nico-identity", ..] => Some(parse_cli(&words)),
                ["cargo", "run", ref rest @ ..] => {
                    rest.iter().position(|w| *w == "--").map(|dash| {
                        let mut argv = vec!["nico-identity".to_owned()];
                        argv.extend(words[dash + 3..].iter().cloned());
                        parse_cli(&argv)
                    })
                }
                ["cargo", "xtask", ..] => Some(
                    <crate::Cli as clap::Parser>::try_parse_from(
                        std::iter::once("cargo xtask").chain(words[2..].iter().map(String::as_str)),
                    )
                    .map(drop)
                    .map_err(|e| e.to_string()),
                ),
                _ => None,
            };
            match outcome {
                Some(Ok(())) => checked += 1,
                Some(Err(error)) => {
                    problems.push(format!("{document}: `{}`: {error}", words.join(" ")));
                }
                None => {}
            }
        }
    }
    if !problems.is_empty() {
        bail!("documented commands do not parse:\n{}", problems.join("\n"));
    }
    eprintln!("docs: {checked} documented commands parse");
    Ok(())
}

fn parse_cli(argv: &[String]) -> Result<(), String> {
    <nico_identity_cli::Cli as clap::Parser>::try_parse_from(argv)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The commands of the fenced `sh` blocks of a Markdown text, split into words (quotes
/// group, a trailing backslash continues the line, `#` starts a comment).
pub(crate) fn shell_commands(markdown: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed == "```sh";
            continue;
        }
        if !in_block || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let words = split_words(&pending);
                if !words.is_empty() {
                    commands.push(words);
                }
                pending.clear();
            }
        }
    }
    commands
}

fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') if word.is_none() => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The whole reference: the global options, then every command depth first.
pub(crate) fn render(cli: &clap::Command) -> String {
    let mut cli = cli.clone();
    cli.build();
    let mut out = String::new();
    out.push_str(
        "<!-- @generated by `cargo xtask docs` from the clap definitions in crates/cli; do not \
         edit by hand. -->\n\n# Command-line reference\n\n",
    );
    if let Some(about) = cli.get_about() {
        let _ = writeln!(out, "{about}\n");
    }
    out.push_str(
        "Every command reads the configuration file (`--config`), then `NICO_` environment \
         variables, then its flags; see [operators.md](operators.md) and `config/`.\n\n",
    );
    out.push_str("## Global options\n\nAccepted by every command.\n\n");
    let globals: Vec<_> = cli.get_arguments().filter(|a| shown(a)).collect();
    options_table(&mut out, &globals);
    for sub in cli.get_subcommands().filter(|s| documented(s)) {
        command(&mut out, cli.get_name(), sub);
    }
    out
}

fn command(out: &mut String, parent: &str, cmd: &clap::Command) {
    let path = format!("{parent} {}", cmd.get_name());
    let _ = writeln!(out, "## `{path}`\n");
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{about}\n");
    }
    // Once the root is built, a subcommand's usage already starts with the whole path.
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    let _ = writeln!(out, "```text\n{usage}\n```\n");
    let own: Vec<_> = cmd
        .get_arguments()
        .filter(|a| shown(a) && !a.is_global_set())
        .collect();
    if !own.is_empty() {
        options_table(out, &own);
    }
    for sub in cmd.get_subcommands().filter(|s| documented(s)) {
        command(out, &path, sub);
    }
}

/// Every visible command but clap's own `help`.
fn documented(cmd: &clap::Command) -> bool {
    !cmd.is_hide_set() && cmd.get_name() != "help"
}

/// Everything but clap's own `--help` and `--version`, and hidden arguments.
fn shown(arg: &clap::Arg) -> bool {
    !arg.is_hide_set() && !matches!(arg.get_id().as_str(), "help" | "version")
}

fn options_table(out: &mut String, args: &[&clap::Arg]) {
    out.push_str("| option | what it does |\n|---|---|\n");
    for arg in args {
        let value = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|name| format!(" <{name}>"))
            .unwrap_or_default();
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let name = match (arg.get_long(), arg.get_short()) {
            (Some(long), _) if takes_value => format!("`--{long}{value}`"),
            (Some(long), _) => format!("`--{long}`"),
            (None, Some(short)) => format!("`-{short}`"),
            (None, None) => format!("`<{}>`", arg.get_id()),
        };
        let mut what = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string().replace('\n', " "))
            .unwrap_or_default();
        if !what.is_empty() && !what.ends_with('.') {
            what.push('.');
        }
        if let Some(env) = arg.get_env() {
            let _ = write!(what, " Environment: `{}`.", env.to_string_lossy());
        }
        let defaults: Vec<_> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy())
            .collect();
        if !defaults.is_empty() && takes_value {
            let _ = write!(what, " Default: `{}`.", defaults.join(","));
        }
        let choices: Vec<_> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !choices.is_empty() && takes_value {
            let _ = write!(what, " One of {}.", choices.join(", "));
        }
        // A `|` inside a cell would end it.
        let cell = |text: &str| text.trim().replace('|', "\\|");
        let _ = writeln!(out, "| {} | {} |", cell(&name), cell(&what));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_blocks_are_split_into_commands() {
        let text = "intro\n```sh\n# a comment\nnico-identity spiffe-id parse 'spiffe://a/b c'\n\
                    helm install x \\\n  --set a=b  # why\n```\n```yaml\nkey: v\n```\n";
        assert_eq!(
            shell_commands(text),
            vec![
                vec!["nico-identity", "spiffe-id", "parse", "spiffe://a/b c"],
                vec!["helm", "install", "x", "--set", "a=b"],
            ]
        );
    }

    #[test]
    fn a_documented_command_that_does_not_parse_is_caught() {
        assert!(
            parse_cli(&[
                "nico-identity".into(),
                "approver".into(),
                "--check-config".into()
            ])
            .is_ok()
        );
        let error = parse_cli(&["nico-identity".into(), "approver".into(), "--chek".into()]);
        assert!(error.unwrap_err().contains("--chek"));
    }

    #[test]
    fn every_visible_command_and_option_is_documented() {
        let cli = nico_identity_cli::Cli::command();
        let text = render(&cli);
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(
                text.contains(&format!("## `nico-identity {}`", sub.get_name())),
                "{} missing",
                sub.get_name()
            );
        }
        for needle in [
            "`--config <FILE>`",
            "Environment: `NICO_CONFIG`",
            "`--exit-after-issue`",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(text.contains("## `nico-identity spiffe-id parse`"));
    }
}
