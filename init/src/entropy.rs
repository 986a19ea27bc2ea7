//! Random bytes from the kernel, of two kinds. [`fill_secret`] (mutual CHAP challenges)
//! waits for the kernel's CRNG like getrandom(2) does. [`fill_nonce`] (DHCP transaction ids
//! and backoff jitter) never waits: early in boot, on a machine without a fast entropy
//! source (QEMU without virtio-rng, a CPU without RDRAND), the CRNG is not ready yet and
//! Linux ≥ 5.18 makes the first blocking reader — even of /dev/urandom — generate jitter
//! entropy first, which took a second of the network phase under QEMU.

use std::io::Read;

/// Fills `buf` from getrandom(2) with `flags` as far as the kernel allows; returns how many
/// bytes it filled.
fn getrandom(buf: &mut [u8], flags: nix::libc::c_uint) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice; the kernel
        // writes at most `rest.len()` bytes into it and we read only what it reports.
        let n = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), flags) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => done += n,
            _ if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
            _ => break,
        }
    }
    done
}

/// Last resort: the clock through xorshift64 (a boot must not stop because a pre-3.17
/// kernel lacks the syscall).
fn fill_from_clock(buf: &mut [u8]) {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(std::process::id()).rotate_left(32)
        | 1;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Unpredictable bytes (a CHAP challenge): getrandom(2), which waits for the CRNG, then
/// /dev/urandom, then the clock.
pub fn fill_secret(buf: &mut [u8]) {
    let done = getrandom(buf, 0);
    let rest = &mut buf[done..];
    if rest.is_empty()
        || std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(rest))
            .is_ok()
    {
        return;
    }
    fill_from_clock(rest);
}

/// Bytes that need only differ between machines and boots (a DHCP xid), without waiting:
/// getrandom(GRND_INSECURE) (Linux ≥ 5.6), else getrandom(GRND_NONBLOCK) once the CRNG is
/// ready, else the clock.
pub fn fill_nonce(buf: &mut [u8]) {
    let mut done = getrandom(buf, nix::libc::GRND_INSECURE);
    if done < buf.len() {
        done += getrandom(&mut buf[done..], nix::libc::GRND_NONBLOCK);
    }
    fill_from_clock(&mut buf[done..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_vary() {
        for fill in [fill_secret, fill_nonce] {
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            fill(&mut a);
            fill(&mut b);
            assert_ne!(a, b);
            assert_ne!(a, [0u8; 32]);
        }
        let mut c = [0u8; 32];
        fill_from_clock(&mut c);
        assert_ne!(c, [0u8; 32]);
    }
}
