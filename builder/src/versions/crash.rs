//! Crash points: where a test may kill `terra` to show each step of a version change
//! leaves a bootable default and that a re-run completes.

/// Test hook: with `TERRA_CRASH_AT=<point>` in the environment, the process kills itself
/// with SIGKILL at that point, so tests can show each step is crash-safe (README,
/// "Versions"). Points: `unpacked`, `chained`, `renamed`, `built`, `extensions` (an
/// upgrade's fetched extensions listed, its state not yet stored), `stored`, `forgotten`,
/// `applied`, and those of an ESP sync (`esp-slot`, `esp-staged`, `esp-renamed`, [`terra_init::esp::Step`]);
/// the controller's provisioning steps use it too.
pub fn crash_point(point: &str) {
    if std::env::var_os("TERRA_CRASH_AT").is_some_and(|v| v == point) {
        eprintln!("terra: TERRA_CRASH_AT={point}: killing myself");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
