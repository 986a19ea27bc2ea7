//! Runs stage0's network phase on this host for one interface, DHCP only, and prints the
//! time to a lease: `lease_ms=<n>` around `bring_up`, plus `exchange_ms=<n>` (the link's
//! own job: DHCP exchange, address applied and read back) and `address=<a>/<p>`. For `cargo xtask bench`, which
//! runs it inside a network namespace of its own; never point it at the host's interfaces.
//!
//! Usage: dhcp_lease IFACE [TIMEOUT_S]
//!
//! The link is expected to be up already. The handoff (lease file, resolv.conf) goes to a
//! temporary directory that is removed afterwards, and the host name is not set.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use terra_init::network::{self, Handoff, IfaceConfig, Method, NetConfig, Selector};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(ifname) = args.next() else {
        eprintln!("usage: dhcp_lease IFACE [TIMEOUT_S]");
        return ExitCode::from(2);
    };
    let timeout_s = match args.next().map(|s| s.parse::<u64>()) {
        None => 10,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("dhcp_lease: TIMEOUT_S: expected a positive number of seconds");
            return ExitCode::from(2);
        }
    };
    let cfg = NetConfig {
        interfaces: vec![IfaceConfig {
            selector: Selector::Name(ifname.clone()),
            method: Method::Dhcp { requested: None },
            mtu: None,
        }],
        nameservers: Vec::new(),
        nameservers6: Vec::new(),
        hostname: None,
        timeout: Duration::from_secs(timeout_s),
        ibft: false,
        links: Default::default(),
        routes: Vec::new(),
    };
    let run_dir = std::env::temp_dir().join(format!("terra-dhcp-lease-{}", std::process::id()));
    let handoff = Handoff {
        run_dir: run_dir.clone(),
        set_hostname: false,
    };
    let start = Instant::now();
    let result = network::bring_up(&cfg, &mut |d| std::thread::sleep(d), &handoff);
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir_all(&run_dir);
    match result {
        Ok(report) => {
            println!("lease_ms={:.3}", elapsed.as_secs_f64() * 1000.0);
            if let Some(c) = report.configured.first() {
                // From the client thread's start to the address applied and read back.
                println!("exchange_ms={:.3}", c.lease.elapsed_ms);
                println!("address={}/{}", c.lease.address, c.lease.prefix);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dhcp_lease: {ifname}: {e}");
            ExitCode::FAILURE
        }
    }
}
