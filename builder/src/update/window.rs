//! Maintenance windows and delays of node.toml's `[update]`: when `terra update` may apply a
//! version and reboot the node.
//!
//! A window is `DAYS START-END [ZONE]`: days as names or ranges (`Sat,Sun`, `Mon-Fri`, `*`
//! for every day; left out, every day), a time range in 24-hour `HH:MM` (an end before the
//! start runs past midnight into the next day), and a zone: `UTC` (the default), an IANA
//! name (`Europe/Berlin`, read from the system's zoneinfo by jiff, daylight saving time
//! included) or a fixed offset (`+02:00`). Several windows may be given; the node may
//! update while any one is open.

use std::fmt;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// One maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The days a window starts on (Monday first).
    days: [bool; 7],
    start: Time,
    end: Time,
    zone: TimeZone,
    text: String,
}

/// A window or delay that does not parse: the text and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.text, self.reason)
    }
}

impl std::error::Error for ParseError {}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(word: &str) -> Option<usize> {
    let w = word.to_ascii_lowercase();
    // "Sat", "saturday": the first three letters name the day, the rest must spell it.
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    (0..7).find(|&i| w == DAY_NAMES[i] || w == FULL[i])
}

fn weekday_index(d: Weekday) -> usize {
    d.to_monday_zero_offset() as usize
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text == "*" {
        return Ok([true; 7]);
    }
    for part in text.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let name = |w: &str| {
            day_index(w).ok_or_else(|| {
                format!("{w:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun or a range Mon-Fri)")
            })
        };
        let (from, to) = (name(a)?, name(b)?);
        // Fri-Mon wraps over the weekend.
        let mut i = from;
        loop {
            days[i] = true;
            if i == to {
                break;
            }
            i = (i + 1) % 7;
        }
    }
    Ok(days)
}

fn parse_time(text: &str) -> Result<Time, String> {
    let bad = || format!("{text:?} is not a time of day (HH:MM, 00:00 to 23:59)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

fn parse_zone(text: &str) -> Result<TimeZone, String> {
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Ok(TimeZone::UTC);
    }
    if let Some(sign) = text.chars().next().filter(|c| *c == '+' || *c == '-') {
        let t = parse_time(&text[1..])
            .map_err(|_| format!("{text:?} is not an offset (+HH:MM or -HH:MM)"))?;
        let secs = i32::from(t.hour()) * 3600 + i32::from(t.minute()) * 60;
        let secs = if sign == '-' { -secs } else { secs };
        let offset = Offset::from_seconds(secs).map_err(|e| e.to_string())?;
        return Ok(TimeZone::fixed(offset));
    }
    TimeZone::get(text).map_err(|e| {
        format!("{text:?} is not a time zone this machine knows (UTC, +HH:MM or an IANA name): {e}")
    })
}

impl std::str::FromStr for Window {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Window, ParseError> {
        let err = |reason: String| ParseError {
            text: text.to_string(),
            reason,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, range, zone) = match words.as_slice() {
            [range] => ("*", *range, None),
            // A time range always has a colon; days never do.
            [a, b] if !a.contains(':') => (*a, *b, None),
            [range, zone] => ("*", *range, Some(*zone)),
            [days, range, zone] => (*days, *range, Some(*zone)),
            _ => {
                return Err(err(
                    "a window is `DAYS HH:MM-HH:MM [ZONE]`, e.g. \"Sat,Sun 02:00-04:00\"".into(),
                ))
            }
        };
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| err(format!("{range:?} is not a time range (HH:MM-HH:MM)")))?;
        let start = parse_time(a).map_err(&err)?;
        let end = parse_time(b).map_err(&err)?;
        if start == end {
            return Err(err("the window starts and ends at the same time".into()));
        }
        Ok(Window {
            days: parse_days(days).map_err(&err)?,
            start,
            end,
            zone: zone.map_or(Ok(TimeZone::UTC), parse_zone).map_err(&err)?,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An opening of a window: from `start` (inclusive) to `end` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Opening {
    /// When it opens.
    pub start: Timestamp,
    /// When it closes.
    pub end: Timestamp,
}

impl Window {
    /// The opening that starts on local date `day`, when the window starts on that day.
    fn opening_on(&self, day: Date) -> Option<Opening> {
        if !self.days[weekday_index(day.weekday())] {
            return None;
        }
        let end_day = if self.end < self.start {
            day.tomorrow().ok()?
        } else {
            day
        };
        // A local time that does not exist (a spring-forward gap) moves forward, one that
        // happens twice takes the first: jiff's "compatible" choice, as RFC 5545 and most
        // schedulers do.
        let start = self
            .zone
            .to_timestamp(DateTime::from_parts(day, self.start))
            .ok()?;
        let end = self
            .zone
            .to_timestamp(DateTime::from_parts(end_day, self.end))
            .ok()?;
        (start < end).then_some(Opening { start, end })
    }

    /// The opening `now` falls in, if any.
    pub fn open_at(&self, now: Timestamp) -> Option<Opening> {
        let today = self.zone.to_datetime(now).date();
        // An opening that started yesterday may run past midnight.
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|d| self.opening_on(d))
            .find(|o| o.start <= now && now < o.end)
    }

    /// The first opening that starts after `now` (within the next eight days).
    pub fn next_after(&self, now: Timestamp) -> Option<Opening> {
        let mut day = self.zone.to_datetime(now).date();
        for _ in 0..9 {
            if let Some(o) = self.opening_on(day).filter(|o| o.start > now) {
                return Some(o);
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

/// The opening of any of `windows` that `now` falls in (the one that closes last).
pub fn open_now(windows: &[Window], now: Timestamp) -> Option<Opening> {
    windows
        .iter()
        .filter_map(|w| w.open_at(now))
        .max_by_key(|o| o.end)
}

/// The earliest opening of any of `windows` after `now`.
pub fn next_opening(windows: &[Window], now: Timestamp) -> Option<Opening> {
    windows.iter().filter_map(|w| w.next_after(now)).min()
}

/// Parses a delay: `30m`, `90s`, `2h`, `1h 30m` (jiff's friendly format) or ISO 8601
/// (`PT30M`); never negative.
pub fn parse_delay(text: &str) -> Result<std::time::Duration, ParseError> {
    let err = |reason: String| ParseError {
        text: text.to_string(),
        reason,
    };
    let d: SignedDuration = text.trim().parse().map_err(|e| {
        err(format!(
            "not a duration (e.g. \"30m\", \"90s\", \"2h\"): {e}"
        ))
    })?;
    std::time::Duration::try_from(d).map_err(|_| err("a delay cannot be negative".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn w(s: &str) -> Window {
        s.parse().unwrap()
    }

    #[test]
    fn weekend_nights_in_utc() {
        let win = w("Sat,Sun 02:00-04:00");
        // 2026-12-12 is a Saturday.
        assert!(win.open_at(ts("2026-12-12T02:00:00Z")).is_some());
        assert!(win.open_at(ts("2026-12-12T03:59:59Z")).is_some());
        assert!(win.open_at(ts("2026-12-12T04:00:00Z")).is_none());
        assert!(
            win.open_at(ts("2026-12-11T03:00:00Z")).is_none(),
            "a Friday"
        );
        assert!(
            win.open_at(ts("2026-12-13T03:00:00Z")).is_some(),
            "a Sunday"
        );
        assert_eq!(
            win.next_after(ts("2026-12-07T12:00:00Z")).unwrap().start,
            ts("2026-12-12T02:00:00Z")
        );
    }

    #[test]
    fn ranges_midnight_zones_and_offsets() {
        let win = w("Fri-Mon 22:00-01:30 +02:00");
        // Monday 22:00 +02:00 = 20:00Z; it runs to Tuesday 01:30 +02:00 = Monday 23:30Z.
        assert!(win.open_at(ts("2026-12-07T20:00:00Z")).is_some());
        assert!(win.open_at(ts("2026-12-07T23:29:00Z")).is_some());
        assert!(
            win.open_at(ts("2026-12-08T20:30:00Z")).is_none(),
            "Tuesday is not in Fri-Mon"
        );
        let every = w("00:00-00:01");
        assert!(every.open_at(ts("2026-12-09T00:00:30Z")).is_some());
        // Berlin is UTC+1 in winter, UTC+2 in summer: the window follows the local clock.
        let berlin = w("* 03:00-04:00 Europe/Berlin");
        assert!(berlin.open_at(ts("2026-12-07T02:30:00Z")).is_some());
        assert!(berlin.open_at(ts("2026-07-07T01:30:00Z")).is_some());
        assert!(berlin.open_at(ts("2026-07-07T02:30:00Z")).is_none());
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        for (text, says) in [
            ("Sat 2am-4am", "not a time of day"),
            ("Caturday 02:00-04:00", "not a day"),
            ("Sat 02:00-02:00", "same time"),
            ("Sat 02:00", "not a time range"),
            ("Sat 02:00-04:00 Mars/Olympus", "time zone"),
            ("Sat 25:00-04:00", "not a time of day"),
            ("", "a window is"),
            ("Sat 02:00-04:00 UTC extra", "a window is"),
        ] {
            let e = text.parse::<Window>().unwrap_err();
            assert!(e.to_string().contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn delays() {
        assert_eq!(parse_delay("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_delay("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_delay("1h 30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_delay("PT2H").unwrap().as_secs(), 7200);
        assert!(parse_delay("soon").is_err());
        assert!(parse_delay("-5m").is_err());
    }

    proptest! {
        /// Whatever the text, parsing never panics; a window that parses is open at each
        /// instant of its next opening and closed just before it.
        #[test]
        fn windows_parse_or_refuse_and_open_when_they_say(
            days in "(\\*|Mon|Tue|Sat,Sun|Fri-Mon|[a-z]{0,4})",
            h1 in 0u8..26, m1 in 0u8..61, h2 in 0u8..26, m2 in 0u8..61,
            zone in "(|UTC|\\+02:00|-05:30|Europe/Berlin|America/New_York|X)",
            secs in 0i64..4_000_000_000,
        ) {
            let text = format!("{days} {h1:02}:{m1:02}-{h2:02}:{m2:02} {zone}");
            if let Ok(win) = text.parse::<Window>() {
                let now = Timestamp::from_second(secs).unwrap();
                if let Some(o) = win.next_after(now) {
                    prop_assert!(o.start > now);
                    prop_assert_eq!(win.open_at(o.start).map(|x| x.start), Some(o.start), "{}", text);
                    // No opening starts between now and the one it names.
                    let gap = (o.start - now).as_secs();
                    for k in 1..16 {
                        let t = now + SignedDuration::from_secs(gap * k / 16);
                        if let Some(x) = win.open_at(t) {
                            prop_assert!(x.start <= now, "{text}: {} opens before {}", x.start, o.start);
                        }
                    }
                }
                if let Some(o) = win.open_at(now) {
                    prop_assert!(o.start <= now && now < o.end);
                }
            }
        }
    }
}
