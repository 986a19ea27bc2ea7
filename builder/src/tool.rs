//! Host tools the builder drives (grub-mkimage, xorriso, mtools, make): run them, and when
//! they fail say which command, which Debian package provides it, and what it printed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// A host tool that could not run or failed.
#[derive(Debug)]
pub struct ToolError {
    /// The command line, as run.
    pub command: String,
    /// The Debian package that provides the program.
    pub package: &'static str,
    /// What went wrong.
    pub kind: ToolErrorKind,
}

/// How a host tool failed.
#[derive(Debug)]
pub enum ToolErrorKind {
    /// The program is not installed.
    NotFound,
    /// It could not be started.
    Spawn(std::io::Error),
    /// It ran and failed; its stderr (or stdout when stderr is empty), trimmed.
    Failed { status: ExitStatus, output: String },
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ToolErrorKind::NotFound => write!(
                f,
                "{}: not found (apt-get install {})",
                self.command, self.package
            ),
            ToolErrorKind::Spawn(e) => write!(f, "cannot run {}: {e}", self.command),
            ToolErrorKind::Failed { status, output } => {
                write!(f, "{} failed ({status})", self.command)?;
                if !output.is_empty() {
                    write!(f, ":\n{output}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ToolError {}

/// `cmd` as a shell-like line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with its output captured; returns stdout.
pub fn run(cmd: &mut Command, package: &'static str) -> Result<String, ToolError> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(&command, package, e))?;
    captured(command, package, out)
}

/// A finished run's stdout, or the error naming the command, its package and its output
/// (stderr, else stdout).
fn captured(
    command: String,
    package: &'static str,
    out: std::process::Output,
) -> Result<String, ToolError> {
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let output = if stderr.is_empty() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            stderr
        };
        return Err(ToolError {
            command,
            package,
            kind: ToolErrorKind::Failed {
                status: out.status,
                output: tail(&output, 60),
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with `input` on its stdin (sfdisk reads its script there); returns stdout.
pub fn run_with_input(
    cmd: &mut Command,
    package: &'static str,
    input: &[u8],
) -> Result<String, ToolError> {
    use std::io::Write as _;
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(&command, package, e))?;
    // A tool that exits without reading all of it shows as its exit status below.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| spawn_error(&command, package, e))?;
    captured(command, package, out)
}

/// Runs `cmd` with its output on this process's terminal (long builds show progress).
pub fn run_visible(cmd: &mut Command, package: &'static str) -> Result<(), ToolError> {
    let command = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| spawn_error(&command, package, e))?;
    if !status.success() {
        return Err(ToolError {
            command,
            package,
            kind: ToolErrorKind::Failed {
                status,
                output: String::new(),
            },
        });
    }
    Ok(())
}

fn spawn_error(command: &str, package: &'static str, e: std::io::Error) -> ToolError {
    ToolError {
        command: command.to_string(),
        package,
        kind: if e.kind() == std::io::ErrorKind::NotFound {
            ToolErrorKind::NotFound
        } else {
            ToolErrorKind::Spawn(e)
        },
    }
}

/// The last `lines` lines of `text`: a failing tool's cause is at its end.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fails like a missing tool when `path` (a data file a package ships) does not exist.
pub fn require_file(path: &Path, package: &'static str) -> Result<(), ToolError> {
    if path.exists() {
        return Ok(());
    }
    Err(ToolError {
        command: path.display().to_string(),
        package,
        kind: ToolErrorKind::NotFound,
    })
}

/// Something a command will run or read, and the Debian package that provides it: checked
/// before the command writes anything ([`check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A program, found on `$PATH` as [`Command`] finds it.
    Program(&'static str, &'static str),
    /// A data file a package ships.
    File(PathBuf, &'static str),
}

impl Need {
    /// Programs from one package.
    pub fn programs(names: &[&'static str], package: &'static str) -> Vec<Need> {
        names.iter().map(|n| Need::Program(n, package)).collect()
    }

    /// The error a missing one is, as a failed run of it would say.
    fn missing(&self) -> ToolError {
        let (command, package) = match self {
            Need::Program(name, package) => (name.to_string(), *package),
            Need::File(path, package) => (path.display().to_string(), *package),
        };
        ToolError {
            command,
            package,
            kind: ToolErrorKind::NotFound,
        }
    }

    fn present(&self) -> bool {
        match self {
            Need::Program(name, _) => on_path(name).is_some(),
            Need::File(path, _) => path.exists(),
        }
    }
}

/// `program` as `Command::new(program)` would run it: a path as given, else the first
/// executable file of that name in a `$PATH` directory.
pub fn on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// Host tools and files a command needs that are not there; each names its package.
#[derive(Debug)]
pub struct Missing(pub Vec<ToolError>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(
            f,
            "missing on this host (checked before anything was written): {}",
            list.join("; ")
        )
    }
}

impl std::error::Error for Missing {}

/// Fails naming every one of `needs` that is missing (once each), before a command
/// starts what it could not finish: a disk half made is worse than none.
pub fn check(needs: &[Need]) -> Result<(), Missing> {
    let mut missing: Vec<&Need> = Vec::new();
    for n in needs {
        if !missing.contains(&n) && !n.present() {
            missing.push(n);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Missing(missing.into_iter().map(Need::missing).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_each_missing_tool_once_with_its_package() {
        assert!(check(&Need::programs(&["sh"], "dash")).is_ok());
        let needs = [
            Need::Program("terra-no-such-tool", "terra-pkg"),
            Need::Program("sh", "dash"),
            Need::Program("terra-no-such-tool", "terra-pkg"),
            Need::File(PathBuf::from("/nonexistent/boot.img"), "grub-pc-bin"),
        ];
        let err = check(&needs).unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert_eq!(
            err.to_string(),
            "missing on this host (checked before anything was written): \
             terra-no-such-tool: not found (apt-get install terra-pkg); \
             /nonexistent/boot.img: not found (apt-get install grub-pc-bin)"
        );
    }

    #[test]
    fn on_path_finds_executables_only() {
        assert!(on_path("sh").is_some());
        assert!(on_path("/bin/sh").is_some());
        assert!(on_path("/etc/passwd").is_none());
        assert!(on_path("terra-no-such-tool").is_none());
    }
}
