//! The terminal progress bar of `terra image pull|unpack`, `install` and `upgrade`: the
//! library reports through [`Progress`], this draws it with indicatif on stderr. The
//! command line uses it only when stderr is a terminal and `--quiet` is not given.

use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use terra_builder::oci::Progress;

/// One bar per phase: bytes done of the total, the rate, and which blob or layer.
pub struct Bar {
    bar: ProgressBar,
    items: AtomicUsize,
}

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>6} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Bar {
            bar,
            items: AtomicUsize::new(0),
        }
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, items: usize, bytes: u64) {
        self.items.store(items, Ordering::Relaxed);
        self.bar.reset();
        self.bar.set_length(bytes);
        self.bar.set_prefix(what.to_string());
        self.bar.set_message("");
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar
            .enable_steady_tick(std::time::Duration::from_millis(200));
    }

    fn item(&self, index: usize, name: &str) {
        // A digest's first hex digits say which blob, as docker's pull does.
        let short = name
            .split_once(':')
            .map_or(name, |(_, hex)| hex.get(..12).unwrap_or(hex));
        self.bar.set_message(format!(
            "{}/{} {short}",
            index + 1,
            self.items.load(Ordering::Relaxed)
        ));
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn finish(&self) {
        self.bar.disable_steady_tick();
        self.bar.finish_and_clear();
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
}
