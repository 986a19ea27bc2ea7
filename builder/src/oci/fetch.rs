//! Blob downloads that survive an interruption. A blob streams into `<hex>.partial` beside
//! its content address in the layout, handed to the kernel every MiB and synced every
//! [`SYNC_EVERY`] bytes, so a kill, a power cut or a dropped connection leaves a usable
//! prefix. The next pull hashes the bytes the partial file holds and asks for the rest
//! with an HTTP range request (`Range: bytes=N-`): a 206 answer is appended, a registry
//! that ignores ranges (200) sends the whole blob, which replaces the partial file.
//!
//! Nothing in a partial file is trusted: the whole blob is checked against the digest
//! and size its descriptor gives before it is renamed to its address. When a resumed
//! blob fails that check (a prefix damaged by a power cut, a registry whose range answer
//! lied), it is fetched once more from its first byte.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use futures_util::StreamExt;
use oci_client::client::{BlobResponse, SizedStream};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};

use super::blob::{Digest, Hasher};
use super::layout::Layout;
use super::progress::Progress;
use super::OciError;

/// Bytes written between two `fdatasync`s of a partial file: what a power cut may cost.
pub const SYNC_EVERY: u64 = 32 << 20;

/// What fetching one blob took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes received from the registry in this run.
    pub transferred: u64,
    /// Bytes an earlier run had left in the partial file that were kept (0: from the start).
    pub resumed_from: u64,
}

/// Fetches blob `d` of `size` bytes into `layout`, resuming from its partial file, and
/// gives it its content address once digest and size match.
pub(crate) async fn fetch_blob(
    client: &Client,
    reference: &Reference,
    layout: &Layout,
    d: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<Fetched, OciError> {
    let path = layout.partial_path(d);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| OciError::io(&path, e))?;
    // Two pulls appending to one partial file would interleave their bytes.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            OciError::blob(
                d,
                format!(
                    "another pull is downloading it ({} is locked)",
                    path.display()
                ),
            )
        },
    )?;
    let mut fetched = Fetched::default();
    let mut kept = file.metadata().map_err(|e| OciError::io(&path, e))?.len();
    if kept > size {
        kept = 0;
    }
    let mut hasher = Hasher::new(d.algorithm());
    if kept > 0 {
        hash_prefix(&mut file, &path, kept, &mut hasher)?;
        progress.advance(kept);
    }
    fetched.resumed_from = kept;
    // A second attempt only for a resumed blob that failed its digest.
    let mut restarted = false;
    loop {
        if kept < size {
            let (stream, at) = open_stream(client, reference, d, size, kept).await?;
            if at < kept {
                // The registry sends the whole blob (it ignores ranges): it replaces ours.
                kept = 0;
                fetched.resumed_from = 0;
                hasher = Hasher::new(d.algorithm());
            }
            let before = kept;
            let sent = receive(
                stream,
                &mut file,
                &path,
                d,
                size,
                &mut kept,
                &mut hasher,
                progress,
            )
            .await;
            fetched.transferred += kept.saturating_sub(before);
            sent?;
            if kept != size {
                return Err(OciError::blob(
                    d,
                    format!(
                        "size mismatch: expected {size} bytes, the connection ended after {kept} \
                         (kept in {} for the next run)",
                        path.display()
                    ),
                ));
            }
        }
        let actual = std::mem::replace(&mut hasher, Hasher::new(d.algorithm())).finish();
        if &actual == d {
            break;
        }
        // Bad bytes are not worth keeping: a prefix an earlier run left (damaged by a power
        // cut, or spliced by a registry whose range answer lied) is fetched again whole.
        if fetched.resumed_from > 0 && !restarted {
            file.set_len(0).map_err(|e| OciError::io(&path, e))?;
            kept = 0;
            restarted = true;
            fetched.resumed_from = 0;
            continue;
        }
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(OciError::blob(
            d,
            format!("digest mismatch: the registry's content hashes to {actual}"),
        ));
    }
    file.sync_all().map_err(|e| OciError::io(&path, e))?;
    drop(file);
    layout.commit_blob(&path, d)?;
    Ok(fetched)
}

/// Reads the first `n` bytes of a partial file into `hasher`.
fn hash_prefix(
    file: &mut fs::File,
    path: &Path,
    n: u64,
    hasher: &mut Hasher,
) -> Result<(), OciError> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| OciError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = file
            .read(&mut buf[..want])
            .map_err(|e| OciError::io(path, e))?;
        if got == 0 {
            return Err(OciError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "partial file shrank"),
            ));
        }
        hasher.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(())
}

/// The request for the bytes from `from` on: a plain GET from the start, a range request
/// after it. Returns the stream and the offset its first byte has in the blob.
async fn open_stream(
    client: &Client,
    reference: &Reference,
    d: &Digest,
    size: u64,
    from: u64,
) -> Result<(SizedStream, u64), OciError> {
    let digest = d.to_string();
    let failed =
        |e: OciDistributionError| OciError::blob(d, format!("cannot fetch: {}", flatten(&e)));
    if from == 0 {
        let s = client
            .pull_blob_stream(reference, digest.as_str())
            .await
            .map_err(failed)?;
        return Ok((s, 0));
    }
    match client
        .pull_blob_stream_partial(reference, digest.as_str(), from, None)
        .await
        .map_err(failed)?
    {
        // A 206 for some other range than the one asked for would splice wrong bytes in.
        BlobResponse::Partial(s) if s.content_length.is_none_or(|n| n == size - from) => {
            Ok((s, from))
        }
        BlobResponse::Partial(_) => Box::pin(open_stream(client, reference, d, size, 0)).await,
        BlobResponse::Full(s) => Ok((s, 0)),
    }
}

/// Writes a response's bytes to the partial file from `*kept` on, hashing and counting
/// them (`*kept` follows); a transfer error keeps what arrived, flushed, for the next run.
#[allow(clippy::too_many_arguments)]
async fn receive(
    mut stream: SizedStream,
    file: &mut fs::File,
    path: &Path,
    d: &Digest,
    size: u64,
    kept: &mut u64,
    hasher: &mut Hasher,
    progress: &dyn Progress,
) -> Result<(), OciError> {
    let io = |e| OciError::io(path, e);
    file.set_len(*kept).map_err(io)?;
    file.seek(SeekFrom::Start(*kept)).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &*file);
    let mut unsynced = 0u64;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        let bytes = match chunk {
            Ok(b) => b,
            // oci-client checks a whole blob's digest too and fails the stream's end; the
            // caller's own check says what differs.
            Err(_) if *kept == size => break,
            Err(e) => {
                failure = Some(OciError::blob(
                    d,
                    format!(
                        "transfer failed after {} of {size} bytes: {e} (kept in {} for the \
                         next run)",
                        *kept,
                        path.display()
                    ),
                ));
                break;
            }
        };
        if *kept + bytes.len() as u64 > size {
            // More than the descriptor gives: nothing of it is worth resuming from.
            drop(out);
            let _ = file.set_len(0);
            *kept = 0;
            return Err(OciError::blob(
                d,
                format!("size mismatch: the registry sent more than the {size} bytes the manifest gives"),
            ));
        }
        out.write_all(&bytes).map_err(io)?;
        hasher.update(&bytes);
        let n = bytes.len() as u64;
        *kept += n;
        unsynced += n;
        progress.advance(n);
        if unsynced >= SYNC_EVERY {
            unsynced = 0;
            out.flush()
                .and_then(|()| out.get_ref().sync_data())
                .map_err(io)?;
        }
    }
    // What arrived stays for the next run, also after a failure.
    out.flush().map_err(io)?;
    failure.map_or(Ok(()), Err)
}

/// A registry error as one line: the registry's own error codes and messages, and the URL;
/// for a request that got no answer, what stopped it (the causes reqwest and hyper keep
/// behind "error sending request": a refused connection, a timeout, a TLS failure).
pub(crate) fn flatten(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            let errs: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            format!("{} ({url})", errs.join("; "))
        }
        other => {
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                let more = c.to_string();
                // Wrappers often repeat their source's text.
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                cause = c.source();
            }
            text
        }
    }
}
