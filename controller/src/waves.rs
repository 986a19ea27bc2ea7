//! A rollout's plan as the operator writes it, taken apart: which nodes (`--nodes all`,
//! `n1,n2`, `label=KEY=VALUE`), in which waves (`--waves 1,10%,50%,100%`), how long a node
//! has to confirm (`--confirm-within 30m`). No I/O: planning 10,000 nodes is one sort and
//! one pass.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One wave as written: a count of nodes, or a cumulative share of the targeted nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wave {
    /// This many more nodes.
    Count(u64),
    /// Up to this percentage of all targeted nodes, counting the waves before.
    Percent(u8),
}

/// Which nodes a rollout moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// Every node.
    All,
    /// These, by hostname.
    Names(Vec<String>),
    /// The nodes with this label.
    Label {
        /// Its key.
        key: String,
        /// Its value.
        value: String,
    },
}

/// Why a plan does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The option (`--waves`, `--nodes`, `--confirm-within`).
    pub option: &'static str,
    /// What was given.
    pub given: String,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.option, self.given, self.why)
    }
}

impl std::error::Error for PlanError {}

fn err(option: &'static str, given: &str, why: impl Into<String>) -> PlanError {
    PlanError {
        option,
        given: given.to_string(),
        why: why.into(),
    }
}

/// Parses `--waves`: comma-separated counts (`1`) and percentages (`10%`, 1–100).
pub fn parse_waves(s: &str) -> Result<Vec<Wave>, PlanError> {
    let bad = |why: &str| err("--waves", s, why);
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if let Some(p) = part.strip_suffix('%') {
            let p: u8 = p
                .parse()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| bad(&format!("{part}: a percentage is 1% to 100%")))?;
            out.push(Wave::Percent(p));
        } else {
            let n: u64 =
                part.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad(&format!("{part:?}: not a count (1, 2, …) or a percentage"))
                })?;
            out.push(Wave::Count(n));
        }
    }
    if out.is_empty() {
        return Err(bad("no waves"));
    }
    Ok(out)
}

/// Where each wave ends among `n` targeted nodes (cumulative counts, strictly increasing,
/// the last one `n`): a count adds that many, a percentage reaches ⌈n·p/100⌉; waves that
/// add nobody are dropped, and a last wave takes whoever the written ones left.
pub fn wave_ends(waves: &[Wave], n: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0usize;
    for w in waves {
        let end = match *w {
            Wave::Count(c) => at.saturating_add(usize::try_from(c).unwrap_or(usize::MAX)),
            Wave::Percent(p) => (n * p as usize).div_ceil(100),
        }
        .min(n);
        if end > at {
            ends.push(end);
            at = end;
        }
    }
    if at < n {
        ends.push(n);
    }
    ends
}

/// The wave of each of `n` nodes (in the order given), from [`wave_ends`].
pub fn assign(waves: &[Wave], n: usize) -> Vec<usize> {
    let ends = wave_ends(waves, n);
    let mut out = Vec::with_capacity(n);
    let mut wave = 0;
    for i in 0..n {
        while ends.get(wave).is_some_and(|&e| i >= e) {
            wave += 1;
        }
        out.push(wave);
    }
    out
}

/// Parses `--nodes`: `all`, `label=KEY=VALUE`, or hostnames separated by commas.
pub fn parse_selector(s: &str) -> Result<Selector, PlanError> {
    let s = s.trim();
    if s == "all" {
        return Ok(Selector::All);
    }
    if let Some(rest) = s.strip_prefix("label=") {
        let (key, value) = rest
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| err("--nodes", s, "a label is label=KEY=VALUE"))?;
        check_label(key, value).map_err(|why| err("--nodes", s, why))?;
        return Ok(Selector::Label {
            key: key.into(),
            value: value.into(),
        });
    }
    let names: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(err(
            "--nodes",
            s,
            "no node named (all, NAME,…, or label=KEY=VALUE)",
        ));
    }
    Ok(Selector::Names(names))
}

/// Label keys and values: 1–63 and 0–63 characters of `[A-Za-z0-9._-]` (as Kubernetes
/// allows, without prefixes), so they fit a command line, a URL and a table cell.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let ok = |s: &str| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if key.is_empty() || !ok(key) {
        return Err(format!("label key {key:?}: 1 to 63 of A-Z a-z 0-9 . _ -"));
    }
    if !ok(value) {
        return Err(format!(
            "label value {value:?}: up to 63 of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Parses `--confirm-within`: a number with `s`, `m`, `h` or `d` (`90s`, `30m`, `2h`).
pub fn parse_duration(s: &str) -> Result<Duration, PlanError> {
    let bad = || {
        err(
            "--confirm-within",
            s,
            "a number with s, m, h or d, e.g. 30m",
        )
    };
    let s = s.trim();
    let unit = s.chars().last().ok_or_else(bad)?;
    let secs: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1]
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(bad)?;
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waves_read_as_counts_and_cumulative_percentages() {
        let w = parse_waves("1,10%,50%,100%").unwrap();
        assert_eq!(
            w,
            [
                Wave::Count(1),
                Wave::Percent(10),
                Wave::Percent(50),
                Wave::Percent(100)
            ]
        );
        assert_eq!(wave_ends(&w, 100), [1, 10, 50, 100]);
        // Few nodes: waves that add nobody go.
        assert_eq!(wave_ends(&w, 3), [1, 2, 3]);
        assert_eq!(wave_ends(&w, 1), [1]);
        assert_eq!(wave_ends(&w, 0), Vec::<usize>::new());
        // Written waves short of every node: a last one takes the rest.
        assert_eq!(wave_ends(&parse_waves("1,2").unwrap(), 10), [1, 3, 10]);
        assert_eq!(assign(&parse_waves("1,50%").unwrap(), 4), [0, 1, 2, 2]);
        for bad in ["", "0", "0%", "101%", "x", "1,,2", "-1"] {
            let e = parse_waves(bad).unwrap_err();
            assert_eq!(e.option, "--waves", "{bad}");
        }
    }

    #[test]
    fn selectors_durations_and_labels() {
        assert_eq!(parse_selector("all").unwrap(), Selector::All);
        assert_eq!(
            parse_selector("n1, n2").unwrap(),
            Selector::Names(vec!["n1".into(), "n2".into()])
        );
        assert_eq!(
            parse_selector("label=rack=r1").unwrap(),
            Selector::Label {
                key: "rack".into(),
                value: "r1".into()
            }
        );
        assert!(parse_selector("label=rack").is_err());
        assert!(parse_selector("label=ra ck=1").is_err());
        assert!(parse_selector(",").is_err());
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        for bad in ["", "30", "m", "0m", "1w", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(check_label("rack", "").is_ok());
        assert!(check_label("", "x").is_err());
        assert!(check_label(&"k".repeat(64), "x").is_err());
    }

    fn wave() -> impl Strategy<Value = Wave> {
        prop_oneof![
            (1u64..50).prop_map(Wave::Count),
            (1u8..=100).prop_map(Wave::Percent)
        ]
    }

    proptest! {
        #[test]
        fn every_node_gets_exactly_one_wave_in_order(
            waves in proptest::collection::vec(wave(), 1..6),
            n in 0usize..2000,
        ) {
            let ends = wave_ends(&waves, n);
            prop_assert!(ends.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(ends.last().copied().unwrap_or(0), n);
            let a = assign(&waves, n);
            prop_assert_eq!(a.len(), n);
            prop_assert!(a.windows(2).all(|w| w[0] <= w[1]));
            if let Some(&last) = a.last() {
                prop_assert_eq!(last + 1, ends.len());
            }
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in "\\PC{0,40}") {
            let _ = parse_waves(&s);
            let _ = parse_selector(&s);
            let _ = parse_duration(&s);
        }
    }
}
