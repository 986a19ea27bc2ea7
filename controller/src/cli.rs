//! `terra serve` and `terra node` (the `terra` CLI execs `terra-controller` for them).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use lexopt::prelude::*;

use crate::client::Client;
use crate::http::NodeView;
use crate::serve::{self, ServeOptions};

const SERVE_USAGE: &str = "\
terra serve — provision diskless nodes: iPXE over HTTP, a copy-on-write iSCSI LUN each

Usage: terra serve [options]

Options:
      --state DIR           state directory: database, LUNs, token (default
                            /var/lib/terra/controller; put it on btrfs or XFS so
                            every LUN after an image's first is a reflink)
      --database URL        sqlite://… or postgres://user@host/db (default: SQLite
                            in DIR/terra.db; PostgreSQL lets controllers share)
      --listen ADDR         HTTP address (default 127.0.0.1:8080)
      --public-url URL      where nodes reach it (default http://ADDR)
      --iscsi-listen ADDR   tgtd's portal (default 127.0.0.1:3260)
      --iscsi-portal H:P    the portal nodes are told (default: --iscsi-listen)
      --kernel FILE         the kernel nodes boot (default DIR/boot/vmlinuz)
      --initramfs FILE      the shared Terra initramfs (default DIR/boot/initrd.img)
      --cmdline ARGS        kernel arguments of every entry (e.g. console=ttyS0)
      --chap                generated mutual CHAP for nodes that give none
      --token-file FILE     the API token (default DIR/token, made on first start)
      --tgtd-control-port N tgtd's control port (default 13260)
      --lun-size MIB        size of each LUN, sparse (default 4096)
      --plain-http          pull from registries over plain HTTP
      --verify-key PEM      images must carry a cosign signature by this ECDSA
                            P-256 key (repeatable; any one suffices): checked
                            before a node is added, kept on its LUN for upgrades
  -h, --help                print this help
";

const NODE_USAGE: &str = "\
terra node — manage the nodes of a Terra controller

Usage: terra node [--server URL] [--token-file FILE] <command>

Commands:
  add FILE              add the node of a node.toml (hostname, mac, image; an
                        [iscsi] initiator and CHAP are optional) and provision it
  list [--json]         HOSTNAME MAC IMAGE VERSION INITIATOR TARGET STATE
  show NAME             one node, with why it failed
  delete NAME           remove its target, LUN and boot entry
  upgrade NAME REF      add a version from REF to its LUN (the node must be off;
                        it boots it next time and falls back by itself)
  discovered            machines that asked for a boot without being known

Options:
      --server URL      the controller (default $TERRA_SERVER, else
                        http://127.0.0.1:8080)
      --token-file FILE the token for changes (default: $TERRA_TOKEN)
  -h, --help            print this help
";

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("terra: {msg}");
    ExitCode::from(1)
}

/// Runs the command line `args` (without the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let mut p = lexopt::Parser::from_args(args);
    let res = match p.next() {
        Ok(Some(Value(cmd))) if cmd == "serve" => cmd_serve(&mut p),
        Ok(Some(Value(cmd))) if cmd == "node" => cmd_node(&mut p),
        Ok(Some(Long("help") | Short('h'))) | Ok(None) => {
            print!("{SERVE_USAGE}\n{NODE_USAGE}");
            Ok(())
        }
        Ok(Some(other)) => Err(format!(
            "{}: not a controller command (serve, node)",
            other.unexpected()
        )),
        Err(e) => Err(e.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn value(p: &mut lexopt::Parser, what: &str) -> Result<String, String> {
    p.value()
        .map_err(|e| format!("{what}: {e}"))?
        .into_string()
        .map_err(|_| format!("{what}: not UTF-8"))
}

fn cmd_serve(p: &mut lexopt::Parser) -> Result<(), String> {
    let mut state = PathBuf::from("/var/lib/terra/controller");
    let mut o: Vec<(String, String)> = Vec::new();
    let mut flags = Vec::new();
    let mut keys = Vec::new();
    while let Some(arg) = p.next().map_err(|e| format!("terra serve: {e}"))? {
        match arg {
            Long("help") | Short('h') => {
                print!("{SERVE_USAGE}");
                return Ok(());
            }
            Long("state") => state = PathBuf::from(value(p, "--state")?),
            Long("verify-key") => keys.push(PathBuf::from(value(p, "--verify-key")?)),
            Long(f @ ("chap" | "plain-http")) => flags.push(f.to_string()),
            Long(
                name @ ("database" | "listen" | "public-url" | "iscsi-listen" | "iscsi-portal"
                | "kernel" | "initramfs" | "cmdline" | "token-file" | "tgtd-control-port"
                | "lun-size"),
            ) => {
                let name = name.to_string();
                let v = value(p, &format!("--{name}"))?;
                o.push((name, v));
            }
            other => return Err(format!("terra serve: {}", other.unexpected())),
        }
    }
    let mut opts = ServeOptions::new(&state);
    for (name, v) in o {
        let bad = |e: String| format!("terra serve: --{name} {v}: {e}");
        match name.as_str() {
            "database" => opts.database = Some(v),
            "listen" => {
                opts.listen = v
                    .parse()
                    .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?
            }
            "public-url" => opts.public_url = v,
            "iscsi-listen" => opts.iscsi_listen = v,
            "iscsi-portal" => opts.iscsi_portal = v,
            "kernel" => opts.kernel = PathBuf::from(v),
            "initramfs" => opts.initramfs = PathBuf::from(v),
            "cmdline" => opts.cmdline = v,
            "token-file" => opts.token_file = Some(PathBuf::from(v)),
            "tgtd-control-port" => {
                opts.tgtd_control_port = v
                    .parse()
                    .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
            }
            "lun-size" => {
                opts.lun_mb = v
                    .parse()
                    .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
            }
            _ => unreachable!("listed above"),
        }
    }
    opts.verify_keys = keys;
    opts.chap = flags.iter().any(|f| f == "chap");
    opts.plain_http = flags.iter().any(|f| f == "plain-http");
    serve::serve(opts).map_err(|e| format!("terra serve: {e}"))
}

fn cmd_node(p: &mut lexopt::Parser) -> Result<(), String> {
    let mut server =
        std::env::var("TERRA_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let mut token_file: Option<PathBuf> = None;
    let mut json = false;
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = p.next().map_err(|e| format!("terra node: {e}"))? {
        match arg {
            Long("help") | Short('h') => {
                print!("{NODE_USAGE}");
                return Ok(());
            }
            Long("server") => server = value(p, "--server")?,
            Long("token-file") => token_file = Some(PathBuf::from(value(p, "--token-file")?)),
            Long("json") => json = true,
            Value(v) => words.push(
                v.into_string()
                    .map_err(|_| "terra node: not UTF-8".to_string())?,
            ),
            other => return Err(format!("terra node: {}", other.unexpected())),
        }
    }
    let token = match &token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("terra node: --token-file {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("TERRA_TOKEN").ok(),
    };
    let c = Client::new(&server, token).map_err(|e| format!("terra node: {e}"))?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let e = |e: crate::client::ClientError| format!("terra node: {e}");
    match words.as_slice() {
        ["add", file] => {
            let text = std::fs::read_to_string(file)
                .map_err(|err| format!("terra node: {file}: {err}"))?;
            let n = c.add(&text, file).map_err(e)?;
            println!(
                "node {} is {} (target {}, initiator {})",
                n.hostname, n.state, n.target, n.initiator
            );
        }
        ["list"] => {
            let nodes = c.list().map_err(e)?;
            if json {
                let rows: Vec<serde_json::Value> = nodes.iter().map(list_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                print!("{}", table(&nodes));
            }
        }
        ["show", name] => {
            let n = c.show(name).map_err(e)?;
            println!("{}", serde_json::to_string_pretty(&n).unwrap_or_default());
        }
        ["delete", name] => {
            c.delete(name).map_err(e)?;
            println!("node {name} deleted");
        }
        ["upgrade", name, reference] => {
            let n = c.upgrade(name, reference).map_err(e)?;
            println!(
                "node {} boots {} next (tentatively; it falls back by itself)",
                n.hostname, n.version
            );
        }
        ["discovered"] => {
            let d = c.discovered().map_err(e)?;
            println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
        }
        _ => return Err(format!("terra node: expected a command\n\n{NODE_USAGE}")),
    }
    Ok(())
}

/// `node list --json`'s object: exactly the listed columns.
fn list_json(n: &NodeView) -> serde_json::Value {
    serde_json::json!({
        "hostname": n.hostname,
        "mac": n.mac,
        "image": n.image,
        "version": n.version,
        "initiator": n.initiator,
        "target": n.target,
        "state": n.state,
    })
}

/// `node list`'s table.
fn table(nodes: &[NodeView]) -> String {
    let header = [
        "HOSTNAME",
        "MAC",
        "IMAGE",
        "VERSION",
        "INITIATOR",
        "TARGET",
        "STATE",
    ];
    let rows: Vec<[String; 7]> = nodes
        .iter()
        .map(|n| {
            [
                n.hostname.clone(),
                n.mac.clone(),
                n.image.clone(),
                n.version.clone(),
                n.initiator.clone(),
                n.target.clone(),
                n.state.clone(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
