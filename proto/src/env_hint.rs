//! A hint for command-line errors whose value came from a `CCO_*` environment variable.
//!
//! clap names the flag in its error even when the flag was not typed and its value came
//! from the environment, which sends the user looking for a flag they never passed.

/// Returns a line naming the environment variable behind `arg`, a flag as clap prints it
/// (`--port <PORT>`), when `argv` does not contain the flag and `variable_set` returns true
/// for its `CCO_*` variable. Flags map to variables by upper case and `_` for `-`, as
/// `--max-body-size` to `CCO_MAX_BODY_SIZE`.
pub fn env_source_hint(
    arg: &str,
    argv: &[String],
    variable_set: impl Fn(&str) -> bool,
) -> Option<String> {
    let flag = arg.split_whitespace().next()?;
    let name = flag.strip_prefix("--")?;
    let typed = argv
        .iter()
        .any(|word| word == flag || word.starts_with(&format!("{flag}=")));
    if typed {
        return None;
    }
    let variable = format!("CCO_{}", name.to_ascii_uppercase().replace('-', "_"));
    variable_set(&variable).then(|| {
        format!("note: the value of {flag} came from the environment variable {variable}; fix it or unset it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn hint_names_the_variable() {
        let hint = env_source_hint("--max-body-size <MB>", &argv(&["ccod"]), |name| {
            name == "CCO_MAX_BODY_SIZE"
        });
        assert_eq!(
            hint.as_deref(),
            Some(
                "note: the value of --max-body-size came from the environment variable \
                 CCO_MAX_BODY_SIZE; fix it or unset it"
            )
        );
    }

    #[test]
    fn typed_flag_gets_no_hint() {
        let set = |_: &str| true;
        assert_eq!(
            env_source_hint("--port <PORT>", &argv(&["ccod", "--port", "x"]), set),
            None
        );
        assert_eq!(
            env_source_hint("--port <PORT>", &argv(&["ccod", "--port=x"]), set),
            None
        );
    }

    #[test]
    fn unset_variable_gets_no_hint() {
        assert_eq!(
            env_source_hint("--port <PORT>", &argv(&["ccod"]), |_| false),
            None
        );
        assert_eq!(
            env_source_hint("<COMMAND>", &argv(&["ccoctl"]), |_| true),
            None
        );
    }
}
