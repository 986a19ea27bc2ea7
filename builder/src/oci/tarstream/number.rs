//! Numbers in tar headers and PAX records, parsed exactly as Go's `archive/tar` parses them
//! (`strconv.go`: `parseNumeric`, `parseOctal`, `parsePAXTime`; `strconv.ParseInt`), so that
//! a field one reader takes as a number is never garbage, or another number, to the other.

/// A point in time: seconds since the epoch and nanoseconds in `0..1e9` (Go's `time.Time`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    /// Seconds since the epoch.
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Time {
    /// Go's `time.Unix(secs, nanos)`: nanoseconds outside `0..1e9` carry into the seconds.
    fn unix(secs: i64, nanos: i64) -> Time {
        let secs = secs.wrapping_add(nanos.div_euclid(1_000_000_000));
        let nanos = nanos.rem_euclid(1_000_000_000) as u32;
        Time { secs, nanos }
    }
}

/// A numeric header field (Go's `parseNumeric`): base-256 when the top bit of the first byte
/// is set (two's complement, sign in bit 6), else octal (see [`octal`]). `None` where Go's
/// reader sets `ErrHeader`.
pub fn numeric(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first() else {
        return Some(0);
    };
    if first & 0x80 == 0 {
        return octal(field);
    }
    let inv = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut x = 0u64;
    for (i, &c) in field.iter().enumerate() {
        let mut c = c ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 > 0 {
            return None;
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 > 0 {
        return None;
    }
    Some(if inv == 0xff { !(x as i64) } else { x as i64 })
}

/// An octal field (Go's `parseOctal`): spaces and NULs trimmed from both ends, then cut at
/// the first NUL left; blank is 0; otherwise octal digits only, no sign, within 64 bits
/// (taken as Go's `int64(x)`, so the top half reads negative).
pub fn octal(field: &[u8]) -> Option<i64> {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let Some(start) = field.iter().position(|b| !pad(b)) else {
        return Some(0);
    };
    let end = field.iter().rposition(|b| !pad(b)).unwrap_or(start);
    let trimmed = &field[start..=end];
    let digits = match trimmed.iter().position(|&b| b == 0) {
        Some(nul) => &trimmed[..nul],
        None => trimmed,
    };
    if digits.is_empty() {
        return None;
    }
    let mut x = 0u64;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        x = x.checked_mul(8)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(x as i64)
}

/// A decimal number as Go's `strconv.ParseInt(s, 10, 64)` reads it: an optional `+` or `-`,
/// then one or more digits, within `i64`.
pub fn int10(s: &[u8]) -> Option<i64> {
    let mut p = DecimalParser::default();
    for &b in s {
        p.push(b);
    }
    p.finish()
}

/// [`int10`] fed one byte at a time, for numbers that arrive in pieces (GNU sparse 1.0
/// maps, read block by block); it keeps no more than the value.
#[derive(Debug, Default, Clone)]
pub struct DecimalParser {
    negative: bool,
    digits: bool,
    bad: bool,
    /// The magnitude so far (up to 2^63, the magnitude of `i64::MIN`).
    value: u64,
    len: usize,
}

impl DecimalParser {
    /// Feeds one byte.
    pub fn push(&mut self, b: u8) {
        let first = self.len == 0;
        self.len += 1;
        if self.bad {
            return;
        }
        match b {
            b'+' | b'-' if first => {
                self.negative = b == b'-';
            }
            b'0'..=b'9' => {
                self.digits = true;
                match self
                    .value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                {
                    Some(v) if v <= 1 << 63 => self.value = v,
                    _ => self.bad = true,
                }
            }
            _ => self.bad = true,
        }
    }

    /// The number, or `None` where Go's `ParseInt` fails; resets for the next number.
    pub fn finish(&mut self) -> Option<i64> {
        let p = std::mem::take(self);
        if p.bad || !p.digits {
            return None;
        }
        if p.negative {
            Some(0i64.wrapping_sub_unsigned(p.value))
        } else {
            i64::try_from(p.value).ok()
        }
    }
}

/// A PAX time (Go's `parsePAXTime`): decimal seconds, optionally `.` and decimal digits
/// (the fraction, truncated to nanoseconds); a negative time's fraction counts toward the
/// past.
pub fn pax_time(s: &[u8]) -> Option<Time> {
    let (secs, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &[][..]),
    };
    let whole = int10(secs)?;
    if frac.is_empty() {
        return Some(Time::unix(whole, 0));
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos = 0i64;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    if secs.first() == Some(&b'-') {
        nanos = -nanos;
    }
    Some(Time::unix(whole, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn octal_as_go_reads_it() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"   644  "), Some(0o644));
        assert_eq!(octal(b"\x00\x00\x000644\x00"), Some(0o644));
        assert_eq!(octal(b"        "), Some(0));
        assert_eq!(octal(b""), Some(0));
        assert_eq!(octal(b"12\x0034"), Some(0o12));
        assert_eq!(octal(b"12 34"), None);
        assert_eq!(octal(b"+644"), None);
        assert_eq!(octal(b"0008"), None);
        assert_eq!(octal(b"1777777777777777777777"), Some(-1));
        assert_eq!(octal(b"7777777777777777777777"), None);
    }

    #[test]
    fn base256_as_go_reads_it() {
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1]), Some(1));
        assert_eq!(numeric(&[0xff; 8]), Some(-1));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4] = 0x7f;
        big[5..].fill(0xff);
        assert_eq!(numeric(&big), Some(i64::MAX));
        big[4] = 0x80;
        assert_eq!(numeric(&big), None);
        big[3] = 1;
        assert_eq!(numeric(&big), None);
    }

    #[test]
    fn decimals_and_times_as_go_reads_them() {
        assert_eq!(int10(b"+12"), Some(12));
        assert_eq!(int10(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(int10(b"9223372036854775808"), None);
        assert_eq!(int10(b"0009"), Some(9));
        for bad in [&b""[..], b"+", b"-", b"1_0", b" 1", b"1 ", b"0x1", b"--1"] {
            assert_eq!(int10(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let t = |s: &str| pax_time(s.as_bytes()).map(|t| (t.secs, t.nanos));
        assert_eq!(t("1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("12."), Some((12, 0)));
        assert_eq!(t("1.1234567899"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-0.5"), Some((-1, 500_000_000)));
        for bad in ["x", ".5", "1.x", "1.-5", "", "1e5", "1.5.5"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Any field: a number or `None`, never a panic; octal text reads back.
        #[test]
        fn fields_never_panic(field in proptest::collection::vec(any::<u8>(), 0..16),
                              v in 0u64..(1 << 33)) {
            let _ = numeric(&field);
            let _ = pax_time(&field);
            let _ = int10(&field);
            let text = format!("{v:011o}\0");
            prop_assert_eq!(numeric(text.as_bytes()), Some(v as i64));
            prop_assert_eq!(int10(v.to_string().as_bytes()), Some(v as i64));
        }

        /// Decimals agree with Rust's own parser where Go's and Rust's rules coincide.
        #[test]
        fn decimals_match_std(s in "[+-]?[0-9]{0,21}") {
            prop_assert_eq!(int10(s.as_bytes()), s.parse::<i64>().ok());
        }
    }
}
