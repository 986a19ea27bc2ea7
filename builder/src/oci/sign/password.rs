//! The password of an encrypted key, as cosign takes it: `COSIGN_PASSWORD` when set (empty
//! is a password too), else typed at the controlling terminal with echo off.

use std::io::{BufRead as _, Write as _};

use p256::elliptic_curve::zeroize::Zeroizing;
use rustix::termios::{self, LocalModes, OptionalActions};

/// The environment variable cosign reads the password from.
pub const ENV: &str = "COSIGN_PASSWORD";

/// The password for the key `shown`: `COSIGN_PASSWORD`, else asked at `/dev/tty`. An error
/// (never holding the password) says what to do when there is no terminal.
pub fn for_key(shown: &str) -> Result<Zeroizing<String>, String> {
    if let Some(v) = std::env::var_os(ENV) {
        return v
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| format!("{ENV} is not UTF-8"));
    }
    let no_tty = |e: std::io::Error| {
        format!("no terminal to ask the key's password at ({e}): set {ENV} to the password")
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_tty)?;
    let saved = termios::tcgetattr(&tty).map_err(|e| no_tty(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    termios::tcsetattr(&tty, OptionalActions::Flush, &quiet).map_err(|e| no_tty(e.into()))?;
    let asked = (|| {
        let mut w = &tty;
        write!(w, "Enter password for private key {shown}: ")?;
        w.flush()?;
        let mut line = Zeroizing::new(String::new());
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        Ok::<_, std::io::Error>(line)
    })();
    // Echo comes back whatever happened.
    let restored = termios::tcsetattr(&tty, OptionalActions::Flush, &saved);
    let line = asked.map_err(|e| format!("reading the password from the terminal: {e}"))?;
    restored.map_err(|e| format!("restoring the terminal: {e}"))?;
    Ok(Zeroizing::new(
        line.strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line)
            .to_string(),
    ))
}
