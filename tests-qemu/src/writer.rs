//! The guest-side write loop the keeper scenarios' roots run, in its own module so the
//! busybox root (`keeper`) and the Debian root (`debian`) share it without importing
//! each other.

/// The writer's loop, shared by the keeper's root init (`crate::keeper::WRITER`) and the
/// Debian root's writer (`crate::debian`): appends a numbered line with the guest uptime to `$log` every 200 ms
/// for `$secs` seconds, syncing each, and reports failed writes and the kernel's I/O errors.
macro_rules! write_loop {
    () => {
        r#"start=$(cut -d. -f1 /proc/uptime)
echo "TERRA-WRITER start uptime=$(cut -d' ' -f1 /proc/uptime)"
i=0
errors=0
while [ $(( $(cut -d. -f1 /proc/uptime) - start )) -lt "$secs" ]; do
  i=$((i+1))
  if ! { echo "$i $(cut -d' ' -f1 /proc/uptime)" >> "$log" && sync; } 2>/run/werr; then
    errors=$((errors+1))
    echo "TERRA-WRITER error at line $i: $(cat /run/werr)"
  fi
  sleep 0.2
done
echo "TERRA-WRITER done lines=$i errors=$errors kernel-io-errors=$(dmesg | grep -ci 'i/o error')"
"#
    };
}
pub(crate) use write_loop;
