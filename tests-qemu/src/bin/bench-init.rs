//! The benchmark root's init: prints the guest uptime (kernel start → here) and powers off.
//! Static and tiny, so that what is measured is the initramfs, not the root.

use std::io::Write;

fn main() {
    if std::fs::metadata("/proc/uptime").is_err() {
        let _ = std::fs::create_dir_all("/proc");
        // SAFETY: the arguments are valid NUL-terminated strings and a null data pointer,
        // as mount(2) accepts for procfs.
        unsafe {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                0,
                std::ptr::null(),
            );
        }
    }
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs = uptime.split_whitespace().next().unwrap_or("?");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "TERRA-BENCH-INIT uptime={secs}");
    let _ = out.flush();
    // SAFETY: sync(2) and reboot(2) take no pointers; as PID 1 we may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // If the kernel refused, PID 1 must still not exit.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
