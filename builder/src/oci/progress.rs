//! Progress of long work (a pull's downloads, an unpack's layers) as events the library
//! reports and a caller may draw. The library never draws: `terra` implements [`Progress`]
//! with a terminal bar, everything else passes [`Silent`].

/// Hears how far a pull or an unpack has come. Every method has an empty default, so an
/// observer implements only what it shows.
pub trait Progress {
    /// A phase begins: `what` ("pull", "unpack"), `items` blobs or layers and `bytes`, the
    /// sum of their sizes as far as known (a docker archive's layers have none: 0).
    fn start(&self, _what: &str, _items: usize, _bytes: u64) {}
    /// Item `index` (from 0) begins: a blob or layer, named by its digest or archive path.
    fn item(&self, _index: usize, _name: &str) {}
    /// `n` more bytes of the current item were read (downloaded, or read from the blob
    /// before decompression), or found already present.
    fn advance(&self, _n: u64) {}
    /// The phase ended, done or failed.
    fn finish(&self) {}
}

/// Shows nothing: what the plain `pull`, `unpack` and `resolve` use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// Calls [`Progress::finish`] when dropped, so a phase that fails with `?` still ends.
pub(crate) struct Phase<'a>(pub &'a dyn Progress);

impl<'a> Phase<'a> {
    pub(crate) fn start(p: &'a dyn Progress, what: &str, items: usize, bytes: u64) -> Self {
        p.start(what, items, bytes);
        Phase(p)
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// A reader that reports each read's byte count.
pub(crate) struct Counted<'a, R> {
    pub(crate) inner: R,
    pub(crate) progress: &'a dyn Progress,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
