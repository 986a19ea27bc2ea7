//! Driving buildah, the build engine behind `terra create`: `bud` for the userland and the
//! components, a working container mounted for the settings, `commit` and `push`.
//! Rootful, with chroot isolation (no runtime needed beyond buildah itself); storage and
//! registries as the host's containers configuration says (`CONTAINERS_STORAGE_CONF`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::CreateError;
use crate::oci::ImageRef;
use crate::tool;

/// Debian's package of the engine.
const PACKAGE: &str = "buildah";

/// How buildah names `r`: `oci:DIR[:TAG]`, `docker-archive:FILE`, `docker://REF`.
pub fn transport(r: &ImageRef) -> String {
    match r {
        ImageRef::Layout { path, tag: Some(t) } => format!("oci:{}:{t}", absolute(path).display()),
        ImageRef::Layout { path, tag: None } => format!("oci:{}", absolute(path).display()),
        ImageRef::DockerArchive { path } => format!("docker-archive:{}", absolute(path).display()),
        ImageRef::Registry(r) => format!("docker://{}", r.whole()),
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The engine, with the options every call shares.
pub struct Buildah {
    /// Plain HTTP (no TLS verification) to registries: a local registry.
    pub plain_http: bool,
    /// Build and commit times and layer file times (`--timestamp`): the same inputs give
    /// the same image.
    pub timestamp: u64,
}

/// How `bud` ended when it failed: its status and the last step it announced.
pub struct BudFailure {
    /// The exit status, said.
    pub status: String,
    /// The instruction of the last `STEP k/n:` line (the one that failed).
    pub step: Option<String>,
}

impl Buildah {
    fn cmd(&self, sub: &str) -> Command {
        let mut c = Command::new("buildah");
        c.arg(sub);
        c
    }

    fn tls(&self, c: &mut Command) {
        if self.plain_http {
            c.arg("--tls-verify=false");
        }
    }

    fn run(&self, c: &mut Command) -> Result<String, CreateError> {
        tool::run(c, PACKAGE)
            .map(|s| s.trim().to_string())
            .map_err(|e| CreateError::Engine(e.to_string()))
    }

    /// `buildah bud` of `containerfile` in `context`, untagged (a name would be recorded
    /// in the final image's `base.name`): its ID is written to `iidfile`. Its output goes to
    /// this process's stderr as it comes.
    pub fn bud(
        &self,
        containerfile: &Path,
        context: &Path,
        iidfile: &Path,
    ) -> Result<Result<(), BudFailure>, CreateError> {
        let mut c = self.cmd("bud");
        c.args([
            "--isolation",
            "chroot",
            "--pull=always",
            "--layers=false",
            "--omit-history",
            "--force-rm",
        ])
        .arg(format!("--timestamp={}", self.timestamp))
        .arg("-f")
        .arg(containerfile)
        .arg("--iidfile")
        .arg(iidfile);
        self.tls(&mut c);
        c.arg(context);
        // --force-rm: without it a component stage's container stays behind.
        // One pipe for both streams, so the step lines and a failing step's output stay
        // in order.
        let (reader, writer) =
            std::io::pipe().map_err(|e| CreateError::Engine(format!("pipe: {e}")))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| CreateError::Engine(format!("pipe: {e}")))?;
        c.stdin(Stdio::null()).stdout(writer).stderr(writer2);
        let mut child = c.spawn().map_err(|e| {
            CreateError::Engine(format!(
                "{}: {e} (install Debian's {PACKAGE} package)",
                tool::describe(&c)
            ))
        })?;
        // The command holds the pipe's write ends: drop them so reading ends with buildah.
        drop(c);
        let mut step = None;
        let mut err = std::io::stderr().lock();
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            if let Some(instr) = step_of(&text) {
                step = Some(instr);
            }
            let _ = writeln!(err, "{text}");
        }
        let status = child
            .wait()
            .map_err(|e| CreateError::Engine(format!("buildah bud: {e}")))?;
        Ok(if status.success() {
            Ok(())
        } else {
            Err(BudFailure {
                status: status.to_string(),
                step,
            })
        })
    }

    /// A working container from local image `image`.
    pub fn from(&self, image: &str) -> Result<String, CreateError> {
        self.run(self.cmd("from").args(["--pull=never", image]))
    }

    /// Mounts the container's tree; returns where.
    pub fn mount(&self, ctr: &str) -> Result<PathBuf, CreateError> {
        self.run(self.cmd("mount").arg(ctr)).map(PathBuf::from)
    }

    /// Unmounts the container's tree.
    pub fn umount(&self, ctr: &str) -> Result<(), CreateError> {
        self.run(self.cmd("umount").arg(ctr)).map(drop)
    }

    /// Sets a label of the container's image config.
    pub fn label(&self, ctr: &str, key: &str, value: &str) -> Result<(), CreateError> {
        self.run(
            self.cmd("config")
                .arg("--label")
                .arg(format!("{key}={value}"))
                .arg(ctr),
        )
        .map(drop)
    }

    /// Commits the container as local image `image` and removes the container.
    pub fn commit(&self, ctr: &str, image: &str) -> Result<(), CreateError> {
        self.run(
            self.cmd("commit")
                .args(["--rm", "--quiet", "--omit-history"])
                .arg(format!("--timestamp={}", self.timestamp))
                .args([ctr, image]),
        )
        .map(drop)
    }

    /// Pushes local image `image` to `dest` (a buildah transport); returns the manifest
    /// digest as pushed.
    pub fn push(&self, image: &str, dest: &str, work: &Path) -> Result<String, CreateError> {
        let digest_file = work.join("digest");
        let mut c = self.cmd("push");
        c.arg("--quiet").arg("--digestfile").arg(&digest_file);
        self.tls(&mut c);
        c.args([image, dest]);
        self.run(&mut c)?;
        std::fs::read_to_string(&digest_file)
            .map(|s| s.trim().to_string())
            .map_err(|e| CreateError::Engine(format!("{}: {e}", digest_file.display())))
    }

    /// Removes a working container; failures are ignored (cleanup).
    pub fn rm(&self, ctr: &str) {
        let _ = self
            .cmd("rm")
            .arg(ctr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Removes local images; failures are ignored (cleanup).
    pub fn rmi(&self, images: &[&str]) {
        let _ = self
            .cmd("rmi")
            .args(images)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The instruction a buildah output line announces (`STEP 2/4: RUN …`, `[1/2] STEP 1/3:
/// FROM …`) or names as failed (`building at STEP "RUN …": exit status 1`).
fn step_of(line: &str) -> Option<String> {
    if let Some(i) = line.find("STEP \"") {
        let rest = &line[i + 6..];
        return rest.rfind("\":").map(|j| rest[..j].to_string());
    }
    let i = line.find("STEP ")?;
    let (num, instr) = line[i + 5..].split_once(": ")?;
    num.bytes()
        .all(|b| b.is_ascii_digit() || b == b'/')
        .then(|| instr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_as_buildah_says_them() {
        assert_eq!(
            step_of("STEP 2/4: RUN echo a: b").as_deref(),
            Some("RUN echo a: b")
        );
        assert_eq!(
            step_of("[1/2] STEP 1/3: FROM oci:/x:y").as_deref(),
            Some("FROM oci:/x:y")
        );
        assert_eq!(
            step_of("Error: building at STEP \"RUN echo x && false\": exit status 1").as_deref(),
            Some("RUN echo x && false")
        );
        assert_eq!(step_of("STEP ahead: not a step"), None);
        assert_eq!(step_of("Copying blob sha256:abc"), None);
    }
}
