//! Phase 5, iscsi (ARCHITECTURE.md §2): log in to each target ourselves, hand the connection to
//! the kernel's iscsi_tcp, scan, and wait for the LUN's disk. No iscsid, no iscsistart.
//!
//! - [`pdu`]: PDUs and framing (RFC 7143 §11), [`text`]: key negotiation (§6, §13),
//!   [`chap`]: CHAP (§12.1.3) — wire formats without I/O;
//! - [`login`]: the login state machine over any `Read + Write`, and a userspace session;
//! - [`target`]: where targets come from (node.toml, command line, DHCP root path, iBFT);
//! - [`netlink`]: NETLINK_ISCSI and the handoff; `sys`: the raw kernel interfaces;
//! - [`keeper`]: the process stage0 leaves behind to log in again after a dropped
//!   connection.
//!
//! The session outlives stage0: the kernel holds the socket. What it cannot do alone is
//! recover: at ErrorRecoveryLevel 0 a broken connection is re-established by a userspace
//! daemon. Until the real system starts one (open-iscsi's iscsid adopts existing sessions
//! when it starts), stage0's [`keeper`] does that job; without either, I/O fails after the
//! session's recovery timeout if the connection drops.

pub mod chap;
pub mod keeper;
pub mod login;
pub mod netlink;
pub mod pdu;
mod sys;
pub mod target;
pub mod text;

use std::fmt;
use std::path::Path;
use std::time::Instant;

use crate::config::iscsi::{redact_netroot, IscsiSection};
use crate::config::ConfigError;
use crate::devices::Devices;
use crate::network::{NetConfig, NetworkReport};
use crate::report::IscsiReport;
use login::{LoginConfig, LoginError};
use netlink::{HandoffError, Netlink};
use target::{Plan, Target};

/// The iscsi phase failed for one target.
#[derive(Debug)]
pub enum IscsiError {
    /// Connecting or logging in failed (the error names portal, target and status).
    Login(LoginError),
    /// The kernel did not take the session.
    Handoff {
        /// Target name.
        target: String,
        /// Portal.
        portal: String,
        /// What failed.
        error: HandoffError,
    },
    /// Logged in, but the LUN's disk did not appear in time.
    NoDisk {
        /// Target name.
        target: String,
        /// SCSI host of the session.
        host: u32,
        /// The LUN awaited; None: any.
        lun: Option<u64>,
        /// How long we waited.
        secs: u64,
    },
    /// A lease's `iscsi:` root path (DHCP option 17) cannot be used (the error names the
    /// root path, its credentials redacted).
    RootPath(ConfigError),
    /// `netroot=dhcp` was given, but no lease carried an `iscsi:` root path.
    NoDhcpRootPath {
        /// The root paths the leases did carry (CHAP secrets redacted).
        offered: Vec<String>,
    },
    /// `rd.iscsi.firmware` was given, but the firmware's table names no target.
    NoFirmwareTarget {
        /// Where the kernel shows the iBFT.
        path: std::path::PathBuf,
        /// Whether the table exists at all (else the firmware published none).
        published: bool,
    },
}

impl fmt::Display for IscsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IscsiError::Login(e) => e.fmt(f),
            IscsiError::Handoff {
                target,
                portal,
                error,
            } => write!(
                f,
                "iSCSI session with {target} at {portal} could not be handed to the kernel: {error}"
            ),
            IscsiError::NoDisk {
                target,
                host,
                lun,
                secs,
            } => {
                write!(f, "iSCSI target {target} (SCSI host{host}) showed no disk")?;
                if let Some(l) = lun {
                    write!(f, " for LUN {l}")?;
                }
                write!(f, " within {secs} s")
            }
            IscsiError::RootPath(e) => e.fmt(f),
            IscsiError::NoDhcpRootPath { offered } => {
                write!(
                    f,
                    "netroot=dhcp: no DHCP lease carried an iscsi: root path (option 17)"
                )?;
                if !offered.is_empty() {
                    write!(f, "; offered: {}", offered.join(", "))?;
                }
                Ok(())
            }
            IscsiError::NoFirmwareTarget { path, published } => {
                write!(f, "rd.iscsi.firmware: ")?;
                if *published {
                    write!(f, "the iBFT in {} has no valid target", path.display())
                } else {
                    write!(
                        f,
                        "the firmware published no iBFT ({} is absent: iscsi_ibft found no table or did not load)",
                        path.display()
                    )
                }
            }
        }
    }
}

impl std::error::Error for IscsiError {}

/// A target that is now a local disk.
#[derive(Debug, Clone)]
pub struct Attached {
    /// What the boot report says about it (never any secret).
    pub report: IscsiReport,
    /// What the keeper needs to log in again (secrets included: never serialized).
    pub keep: keeper::Kept,
}

/// Where the kernel shows the firmware's iSCSI Boot Firmware Table.
const IBFT_DIR: &str = "/sys/firmware/ibft";

/// `rd.iscsi.firmware` and `ip=ibft`, before the network phase: the kernel shows the
/// firmware's table only once `iscsi_ibft` is loaded; its targets join `plan` and, when the
/// network is to be the firmware's, its NICs replace `net`'s interfaces. Without either
/// key nothing is loaded or read.
pub fn merge_firmware(
    plan: Option<&mut Plan>,
    net: Option<&mut NetConfig>,
    devices: &mut Devices,
) -> Result<(), IscsiError> {
    let plan = plan.filter(|p| p.firmware);
    let net = net.filter(|n| n.ibft);
    if plan.is_none() && net.is_none() {
        return Ok(());
    }
    devices.load("iscsi_ibft");
    let dir = Path::new(IBFT_DIR);
    let ibft = target::read_ibft(dir);
    if let Some(plan) = plan {
        plan.add_firmware(&ibft, dir)?;
    }
    if let Some(net) = net {
        let interfaces = ibft.interfaces();
        if interfaces.is_empty() {
            log::warn!("network: the iBFT describes no usable NIC; DHCP on any link");
        } else {
            log::info!("network: from the iBFT: {} interface(s)", interfaces.len());
            net.interfaces = interfaces;
            net.nameservers.extend(ibft.nameservers());
        }
    }
    Ok(())
}

/// `netroot=dhcp`, after the network phase: the targets of the leases' `iscsi:` root paths
/// (DHCP option 17) join `plan`, with CHAP from `node` for a target it names. An error when
/// no lease carried one. Nothing to do for a plan made otherwise.
pub fn add_dhcp_targets(
    plan: &mut Plan,
    node: &IscsiSection,
    net: Option<&NetworkReport>,
) -> Result<(), IscsiError> {
    if !plan.from_dhcp {
        return Ok(());
    }
    let offered: Vec<&str> = net
        .iter()
        .flat_map(|r| &r.configured)
        .filter_map(|c| c.lease.root_path.as_deref())
        .collect();
    add_root_paths(plan, node, &offered)
}

/// [`add_dhcp_targets`] for the root paths the leases `offered`.
fn add_root_paths(
    plan: &mut Plan,
    node: &IscsiSection,
    offered: &[&str],
) -> Result<(), IscsiError> {
    let mut added = 0;
    for root_path in offered {
        if target::add_root_path(plan, node, root_path).map_err(IscsiError::RootPath)? {
            added += 1;
        }
    }
    if added == 0 {
        return Err(IscsiError::NoDhcpRootPath {
            offered: offered.iter().map(|p| redact_netroot(p)).collect(),
        });
    }
    Ok(())
}

/// Logs in to every target of `plan`, hands each session to the kernel and waits for its
/// disk. The network must be up. Modules come from `devices` (iscsi_tcp, the crc32c
/// provider its digests need, sd_mod).
pub fn attach(plan: &Plan, devices: &mut Devices) -> Result<Vec<Attached>, IscsiError> {
    // iscsi_tcp allocates a crc32c hash for each connection: without a provider loaded
    // (and no modprobe to ask for one) connection creation fails.
    for m in ["crypto-crc32c", "iscsi_tcp", "sd_mod"] {
        devices.load(m);
    }
    let sys = Path::new("/sys");
    let mut nl: Option<Netlink> = None;
    let mut out = Vec::new();
    for t in &plan.targets {
        out.push(attach_one(plan, t, devices, sys, &mut nl)?);
    }
    Ok(out)
}

fn attach_one(
    plan: &Plan,
    t: &Target,
    devices: &mut Devices,
    sys: &Path,
    nl: &mut Option<Netlink>,
) -> Result<Attached, IscsiError> {
    let start = Instant::now();
    let mut cfg = LoginConfig::new(&plan.initiator, &t.iqn);
    cfg.chap = t.chap.clone();
    cfg.timeout = plan.timeout;
    log::info!(
        "iscsi: logging in to {} at {} as {} ({})",
        t.iqn,
        t.portal,
        plan.initiator,
        t.source.as_str()
    );
    let session = login::connect(&t.portal, &cfg).map_err(IscsiError::Login)?;
    let login_ms = start.elapsed().as_secs_f64() * 1000.0;
    let chap = session.chap_algorithm.map(|a| a.name());
    // A login with mutual CHAP configured succeeds only once the target's answer checked out.
    let mutual_chap = chap.is_some() && t.chap.as_ref().is_some_and(|c| c.mutual.is_some());
    log::info!(
        "iscsi: logged in to {} in {login_ms:.1} ms (TSIH {}, {} round trips{})",
        t.iqn,
        session.tsih,
        session.round_trips,
        chap.map(|c| format!(", CHAP {c}{}", if mutual_chap { ", mutual" } else { "" }))
            .unwrap_or_default()
    );
    let handoff_err = |error| IscsiError::Handoff {
        target: t.iqn.clone(),
        portal: t.portal.to_string(),
        error,
    };
    if nl.is_none() {
        *nl = Some(Netlink::open(sys, "tcp").map_err(handoff_err)?);
    }
    let Some(link) = nl.as_mut() else {
        return Err(handoff_err(HandoffError::NoReply { op: "open".into() }));
    };
    // Kept for the keeper: CHAP limited to the algorithm this target took (so no MD5
    // retry is ever needed again).
    let mut kept_chap = t.chap.clone();
    if let (Some(c), Some(a)) = (kept_chap.as_mut(), session.chap_algorithm) {
        c.algorithms = vec![a];
    }
    let (isid, tsih) = (session.isid, session.tsih);
    let h = netlink::hand_off(link, session, &t.portal).map_err(handoff_err)?;
    netlink::scan(sys, h.host).map_err(handoff_err)?;
    let deadline = start + plan.timeout;
    let sys_block = sys.join("class/block");
    let (device, _) = devices
        .wait_for_block(deadline, |name, _| {
            netlink::block_is_lun(&sys_block, name, h.host, t.lun)
        })
        .ok_or(IscsiError::NoDisk {
            target: t.iqn.clone(),
            host: h.host,
            lun: t.lun,
            secs: plan.timeout.as_secs(),
        })?;
    let total_ms = start.elapsed().as_secs_f64() * 1000.0;
    log::info!(
        "iscsi: {} is /dev/{device} (session {}, host{}) after {total_ms:.1} ms",
        t.iqn,
        h.sid,
        h.host
    );
    Ok(Attached {
        report: IscsiReport {
            target: t.iqn.clone(),
            portal: t.portal.to_string(),
            source: t.source.as_str(),
            device,
            sid: h.sid,
            host: h.host,
            chap,
            mutual_chap,
            login_ms,
            total_ms,
        },
        keep: keeper::Kept {
            sid: h.sid,
            cid: h.cid,
            host: h.host,
            portal: t.portal.clone(),
            initiator: plan.initiator.clone(),
            target: t.iqn.clone(),
            isid,
            tsih,
            timeout: plan.timeout,
            chap: kept_chap,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_root_paths_add_targets_and_an_empty_offer_names_what_was_offered() {
        let node = IscsiSection::default();
        let mut plan = target::plan(&node, "netroot=dhcp").unwrap().unwrap();
        let offered = [
            "nfs:10.0.2.2:/srv",
            "iscsi:u:s3cret@10.0.2.2::3260::iqn.2024-01.x:root",
        ];
        add_root_paths(&mut plan, &node, &offered).unwrap();
        assert_eq!(plan.targets.len(), 1);
        assert_eq!(plan.targets[0].iqn, "iqn.2024-01.x:root");

        let mut plan = target::plan(&node, "netroot=dhcp").unwrap().unwrap();
        let err = add_root_paths(&mut plan, &node, &["nfs:u:s3cret@10.0.2.2:/srv"]).unwrap_err();
        let IscsiError::NoDhcpRootPath { offered } = &err else {
            panic!("{err}")
        };
        assert_eq!(offered, &["***@10.0.2.2:/srv"]);
        assert!(!err.to_string().contains("s3cret"));
        // A plan not made with netroot=dhcp takes nothing from the leases.
        let mut plan = target::plan(&node, "netroot=iscsi:10.0.2.2::::iqn.2024-01.x:a")
            .unwrap()
            .unwrap();
        add_dhcp_targets(&mut plan, &node, None).unwrap();
        assert_eq!(plan.targets.len(), 1);
    }
}
