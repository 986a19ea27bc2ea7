//! Network phase scenarios: real QEMU with a NIC on user networking (its DHCP server hands out
//! 10.0.2.15/24, router 10.0.2.2, DNS 10.0.2.3), stage0 from this tree, the demo root printing
//! `ip addr`, its routes and the lease files it finds in /run/terra/network.

use lab::harness::{boot, expect, lease, os_disk, phases, report};
use lab::vm::Outcome;

/// Prints the time to the lease and the network phase's duration (visible with --nocapture).
fn measure(out: &Outcome, what: &str) {
    let net_ms = report(out)["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "network")
        .and_then(|p| p["ms"].as_f64())
        .unwrap_or(0.0);
    let l = lease(out, "eth0");
    eprintln!(
        "{what}: lease in {:.0} ms from link up, network phase {net_ms:.0} ms (guest, TCG)",
        l["elapsed_ms"].as_f64().unwrap_or(0.0)
    );
}

fn dhcp_boot(model: &str) {
    let out = boot()
        .disk(os_disk())
        .nic(model)
        .append("ip=dhcp terra.net.timeout=30")
        .timeout(180)
        .run();
    expect(
        &out,
        &[
            "TERRA-DEMO-INIT",
            "inet 10.0.2.15/24",
            "default via 10.0.2.2 dev eth0",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    assert_eq!(
        phases(&out),
        ["early", "config", "devices", "network", "storage", "root", "switch"]
    );
    let l = lease(&out, "eth0");
    assert_eq!(l["source"], "dhcp");
    assert_eq!(l["address"], "10.0.2.15");
    assert_eq!(l["prefix"], 24);
    assert_eq!(l["routers"][0], "10.0.2.2");
    assert_eq!(l["dns"][0], "10.0.2.3");
    assert_eq!(l["server_id"], "10.0.2.2");
    assert!(l["lease_time_s"].as_u64().unwrap() > 0);
    measure(&out, model);
}

#[test]
fn dhcp_over_virtio_net() {
    dhcp_boot("virtio");
}

#[test]
fn dhcp_over_e1000() {
    dhcp_boot("e1000");
}

#[test]
fn static_ip_with_hostname_and_dns() {
    let out = boot()
        .disk(os_disk())
        .nic("virtio")
        .append("ip=10.0.2.50::10.0.2.2:255.255.255.0:static50:eth0:off:10.0.2.3")
        .timeout(180)
        .run();
    expect(
        &out,
        &[
            "TERRA-DEMO-INIT",
            "inet 10.0.2.50/24",
            "default via 10.0.2.2 dev eth0",
            "--- hostname static50",
        ],
    );
    let l = lease(&out, "eth0");
    assert_eq!(l["source"], "static");
    assert!(phases(&out).contains(&"network".to_string()));
}

#[test]
fn no_network_need_leaves_the_network_alone() {
    // A NIC is there (and its driver loads by modalias), but nothing asks for the network.
    let out = boot().disk(os_disk()).nic("virtio").timeout(180).run();
    expect(&out, &["TERRA-DEMO-INIT", "TERRA-DEMO-POWEROFF"]);
    assert!(!phases(&out).contains(&"network".to_string()));
    assert!(!out.log.contains("--- network"), "{}", out.log);
}

#[test]
fn no_nic_ends_in_rescue_naming_the_network_phase() {
    let out = boot()
        .disk(os_disk())
        .append("ip=dhcp terra.net.timeout=3 terra.rescue=halt")
        .timeout(120)
        .run();
    expect(
        &out,
        &[
            "boot failed in phase network",
            "no link any Ethernet link appeared",
            "powering off",
        ],
    );
    assert!(!out.log.contains("TERRA-DEMO-INIT"));
    assert!(out.exited);
}
