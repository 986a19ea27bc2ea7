//! Kernel command line splitting, as the kernel itself does it (`next_arg` in lib/cmdline.c):
//! whitespace separates parameters, double quotes protect spaces and are removed.

/// One `key[=value]` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Everything before the first `=`.
    pub key: String,
    /// Everything after the first `=`, quotes removed; None for a bare flag.
    pub value: Option<String>,
}

/// Splits a command line into parameters. Never fails: any byte string (lossily decoded)
/// gives some list; malformed quoting runs to the end of the line as the kernel does.
pub fn split(line: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut in_quote = false;
        let mut eq: Option<usize> = None;
        for c in chars.by_ref() {
            if c == '"' {
                in_quote = !in_quote;
                continue;
            }
            if c.is_whitespace() && !in_quote {
                break;
            }
            if c == '=' && eq.is_none() {
                eq = Some(word.len());
            }
            word.push(c);
        }
        let param = match eq {
            Some(i) => Param {
                key: word[..i].to_string(),
                value: Some(word[i + 1..].to_string()),
            },
            None => Param {
                key: word,
                value: None,
            },
        };
        // `--` ends the kernel's parameters; what follows belongs to init.
        if param.key == "--" && param.value.is_none() {
            break;
        }
        params.push(param);
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(k: &str, v: Option<&str>) -> Param {
        Param {
            key: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn splits_keys_values_and_flags() {
        assert_eq!(
            split("  root=LABEL=os  ro terra.debug init=/bin/sh\n"),
            vec![
                kv("root", Some("LABEL=os")),
                kv("ro", None),
                kv("terra.debug", None),
                kv("init", Some("/bin/sh")),
            ]
        );
    }

    #[test]
    fn quotes_protect_spaces() {
        assert_eq!(
            split(r#"a="b c" "d=e f" g="#),
            vec![
                kv("a", Some("b c")),
                kv("d", Some("e f")),
                kv("g", Some(""))
            ]
        );
    }

    #[test]
    fn double_dash_ends_kernel_params() {
        assert_eq!(split("a=1 -- b=2"), vec![kv("a", Some("1"))]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let line = String::from_utf8_lossy(&bytes);
            for p in split(&line) {
                prop_assert!(!p.key.chars().any(char::is_whitespace) || line.contains('"'));
            }
        }

        #[test]
        fn plain_params_round_trip(params in proptest::collection::vec(("[a-z.]{1,8}", proptest::option::of("[A-Za-z0-9=/,]{0,8}")), 0..10)) {
            let line = params.iter().map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            }).collect::<Vec<_>>().join(" ");
            let got = split(&line);
            prop_assert_eq!(got.len(), params.len());
            for (p, (k, v)) in got.iter().zip(&params) {
                prop_assert_eq!(&p.key, k);
                prop_assert_eq!(&p.value, v);
            }
        }
    }
}
