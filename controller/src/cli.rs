//! `terra serve` and `terra node` (the `terra` CLI execs `terra-controller` for them).
//!
//! The command line is one `clap` definition ([`Cli`]), as `terra`'s is: help, errors with
//! suggestions, shell completions (`terra-controller completions SHELL`) and man pages
//! (`terra-controller man DIR`) all come from it.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::client::{Client, ClientError};
use crate::db::now_ms;
use crate::serve::{self, ServeOptions, DEFAULT_TGTD_CONTROL_PORT};
use crate::storage::{write_whole, DEFAULT_LUN_MB};
use crate::views::{DiskNodeAdded, NodeView};
use terra_init::config::controller::DEFAULT_TOKEN_FILE;
use terra_init::config::NodeConfig;

/// The controller's name on the command line, in completions and in man pages.
pub const NAME: &str = "terra-controller";

/// Where `node` finds the controller without `--server` or `$TERRA_SERVER`.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// What `terra-controller --help` ends with.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the command failed (the line after `terra: ` says what, and where)
  2  usage error: unknown command or option, missing or invalid argument

`terra serve` and `terra node` run this program with their arguments.

Completions and man pages: `terra-controller completions bash|zsh|fish|elvish|powershell`
prints a completion script; `terra-controller man DIR` writes terra-controller.1 and
terra-controller-<command>.1 into DIR. The Debian package installs both.";

/// terra-controller — provisions diskless Terra nodes (`terra serve`, `terra node`)
#[derive(Debug, Parser)]
#[command(
    name = NAME,
    version,
    propagate_version = true,
    after_help = EXIT_STATUS,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(ServeArgs),
    Node(NodeArgs),
    Rollout(RolloutArgs),
    /// Print a shell completion script on stdout
    ///
    /// bash: save it as ~/.local/share/bash-completion/completions/terra-controller; zsh:
    /// as _terra-controller in a directory on $fpath; fish: as
    /// ~/.config/fish/completions/terra-controller.fish.
    #[command(hide = true)]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write the man pages (terra-controller.1, terra-controller-<command>.1) into a directory
    #[command(hide = true)]
    Man {
        /// The directory, created when missing
        dir: PathBuf,
    },
}

/// Provision diskless nodes: iPXE over HTTP, a copy-on-write iSCSI LUN each
///
/// Serves each node's iPXE entry, kernel and initramfs over HTTP and gives it its own iSCSI
/// target on tgtd (started when not running) with a copy-on-write clone of its image's LUN.
// A repeated option takes its last value, as before clap.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
struct ServeArgs {
    /// State directory: database, LUNs, token
    ///
    /// Put it on btrfs or XFS so that every LUN after an image's first is a reflink.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/terra/controller")]
    state: PathBuf,
    /// sqlite://… or postgres://user@host/db (default: SQLite in DIR/terra.db)
    ///
    /// PostgreSQL lets several controllers share one fleet.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// HTTP address
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where nodes reach it (default http://ADDR)
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// tgtd's portal
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3260")]
    iscsi_listen: String,
    /// The portal nodes are told (default: --iscsi-listen)
    #[arg(long, value_name = "H:P")]
    iscsi_portal: Option<String>,
    /// The kernel nodes boot (default DIR/boot/vmlinuz)
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The shared Terra initramfs (default DIR/boot/initrd.img)
    #[arg(long, value_name = "FILE")]
    initramfs: Option<PathBuf>,
    /// Kernel arguments of every entry (e.g. console=ttyS0)
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    cmdline: Option<String>,
    /// Generated mutual CHAP for nodes that give none
    #[arg(long)]
    chap: bool,
    /// The API token (default DIR/token, made on first start)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// tgtd's control port
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TGTD_CONTROL_PORT)]
    tgtd_control_port: u16,
    /// Size of each LUN in MiB, sparse
    #[arg(long = "lun-size", value_name = "MIB", default_value_t = DEFAULT_LUN_MB)]
    lun_mb: u64,
    /// Pull from registries over plain HTTP
    #[arg(long)]
    plain_http: bool,
    /// Images must carry a cosign signature by this ECDSA P-256 key (repeatable; any one
    /// suffices)
    ///
    /// Checked before a node is added, and kept on its LUN for upgrades.
    #[arg(long = "verify-key", value_name = "PEM")]
    verify_keys: Vec<PathBuf>,
}

/// How `node` and `rollout` reach the controller.
#[derive(Debug, Args)]
struct ApiArgs {
    /// The controller (default $TERRA_SERVER, else http://127.0.0.1:8080)
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// The token for changes (default: $TERRA_TOKEN)
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// Manage the nodes of a Terra controller
///
/// Talks to a controller's HTTP API; changes need its token.
#[derive(Debug, Args)]
#[command(
    args_override_self = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct NodeArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: NodeCommand,
}

/// Move the fleet to an image in waves, driven by the nodes' boot reports
///
/// A rollout resolves REF to one digest when it starts. A wave starts when every node of
/// the waves before it has confirmed the version (or failed); a node whose boot fell back,
/// whose health checks rejected the version, or that did not confirm in time counts as
/// failed, and the rollout pauses at the threshold naming the node and the reason. A
/// digest that failed on a node is never offered to it again. Diskless nodes get the
/// version on their LUN when they next ask for their boot script.
#[derive(Debug, Args)]
#[command(
    args_override_self = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct RolloutArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Start moving nodes to REF
    Start {
        /// The image reference
        #[arg(value_name = "REF")]
        reference: String,
        /// all, NAME,NAME… or label=KEY=VALUE
        #[arg(long, value_name = "WHICH", default_value = "all")]
        nodes: String,
        /// Counts and cumulative percentages of the nodes, e.g. 1,10%,50%,100%
        #[arg(long, value_name = "LIST", default_value = "1,100%")]
        waves: String,
        /// At most N nodes moving at once (0: a whole wave)
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_unavailable: u32,
        /// Pause after N failed nodes
        #[arg(long, value_name = "N", default_value_t = 1)]
        pause_after_failures: u32,
        /// A node booting the version must confirm it within this (s, m, h, d)
        #[arg(long, value_name = "TIME", default_value = "30m")]
        confirm_within: String,
    },
    /// Show one rollout with its nodes, or every rollout
    Status {
        /// The rollout's id
        id: Option<String>,
        /// As JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop offering the version; nodes already moving finish
    Pause {
        /// The rollout's id
        id: String,
    },
    /// Go on after a pause; failures so far no longer count towards the next one
    Resume {
        /// The rollout's id
        id: String,
    },
    /// Stop for good; nodes not yet moving stay on the version they run
    Abort {
        /// The rollout's id
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Add the node of a node.toml and provision it
    ///
    /// The file names hostname, mac and image; an [iscsi] initiator and CHAP are optional.
    /// With --disk-node: a node with its own disk, named by the hostname of the node.toml
    /// `terra install` will keep; it gains [controller] url, and its token is written
    /// beside it (0600), so the node reports its boots and follows rollouts.
    Add {
        /// The node.toml
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The node boots from its own disk and updates itself ([update] source =
        /// "controller"): no LUN, target or boot script is made
        #[arg(long)]
        disk_node: bool,
    },
    /// List the nodes: HOSTNAME MAC IMAGE VERSION INITIATOR TARGET STATE RUNNING DIGEST
    /// LAST-BOOT RESULT LAST-SEEN (the last four from the nodes' own boot reports)
    List {
        /// A JSON array of objects with exactly those columns
        #[arg(long)]
        json: bool,
    },
    /// Show one node, with why it failed and its recent boots (phase times, fallbacks,
    /// confirmations)
    Show {
        /// Its hostname
        name: String,
        /// The node and its events as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a node's target, LUN and boot entry
    Delete {
        /// Its hostname
        name: String,
    },
    /// Add a version from REF to a node's LUN (the node must be off)
    ///
    /// The node boots it next time, tentatively, and falls back by itself.
    Upgrade {
        /// Its hostname
        name: String,
        /// The image reference
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Machines that asked for a boot without being known
    Discovered,
    /// Set (KEY=VALUE) or remove (KEY-) a node's labels, for `rollout start --nodes label=…`
    Label {
        /// Its hostname
        name: String,
        /// KEY=VALUE or KEY-
        #[arg(value_name = "LABEL", required = true)]
        labels: Vec<String>,
    },
}

/// Why a command failed; printed after `terra: `.
#[derive(Debug)]
pub enum CliError {
    /// The controller stopped or could not start.
    Serve(String),
    /// `--token-file` could not be read.
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `node add`'s node.toml could not be read.
    NodeFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `node add --disk-node` could not write the node's token or its [controller] (the
    /// node was added: delete and add it again).
    DiskNodeFile {
        node: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The API refused or could not be reached.
    Client(ClientError),
    /// The same, for `rollout`.
    Rollout(ClientError),
    /// A `node label` argument that is neither KEY=VALUE nor KEY-.
    Label(String),
    /// `man DIR` could not write its pages.
    Man {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Serve(e) => write!(f, "terra serve: {e}"),
            CliError::TokenFile { path, source } => {
                write!(f, "terra node: --token-file {}: {source}", path.display())
            }
            CliError::NodeFile { path, source } => {
                write!(f, "terra node: {}: {source}", path.display())
            }
            CliError::DiskNodeFile { node, path, source } => write!(
                f,
                "terra node: node {node} was added, but writing {} failed: {source} (its token \
                 is not kept anywhere else: `terra node delete {node}` and add it again)",
                path.display()
            ),
            CliError::Client(e) => write!(f, "terra node: {e}"),
            CliError::Rollout(e) => write!(f, "terra rollout: {e}"),
            CliError::Label(l) => write!(
                f,
                "terra node label: {l:?}: a label is KEY=VALUE (set) or KEY- (remove)"
            ),
            CliError::Man { dir, source } => write!(f, "{}: {source}", dir.display()),
        }
    }
}

impl std::error::Error for CliError {}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(e)
    }
}

/// Gives a disk node's node.toml (`file`, holding `text`) what the controller handed out:
/// the token in its token file beside it (0600, written whole or not at all), and
/// `[controller] url` when the file has no `[controller]` table. Returns what to tell.
fn hand_out(file: &Path, text: &str, added: &DiskNodeAdded) -> Result<String, CliError> {
    let node = &added.node.hostname;
    let failed = |path: &Path| {
        let (node, path) = (node.clone(), path.to_path_buf());
        move |source| CliError::DiskNodeFile { node, path, source }
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    // The controller parsed this file already; a table it has decides the token's name.
    let section = NodeConfig::parse(text, file)
        .map(|c| c.controller)
        .unwrap_or_default();
    let token_file = dir.join(section.token_file.as_deref().unwrap_or(DEFAULT_TOKEN_FILE));
    write_whole(&token_file, added.token.as_bytes(), 0o600).map_err(failed(&token_file))?;
    let table = match &section.url {
        None if !text.contains("[controller]") => {
            let mut out = text.to_string();
            if !out.ends_with('\n') && !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("\n[controller]\nurl = \"{}\"\n", added.url));
            let mode = std::fs::metadata(file).map_or(0o644, |m| m.permissions().mode() & 0o7777);
            write_whole(file, out.as_bytes(), mode).map_err(failed(file))?;
            format!(
                "{} gained [controller] url = \"{}\"",
                file.display(),
                added.url
            )
        }
        Some(u) if u.trim_end_matches('/') == added.url => {
            format!("{} names this controller already", file.display())
        }
        other => format!(
            "{} has [controller] {}: set url = \"{}\" there yourself",
            file.display(),
            other
                .as_ref()
                .map_or("without a url".to_string(), |u| format!("url = {u:?}")),
            added.url
        ),
    };
    Ok(format!(
        "node {node} has its own disk: {table}, and {} holds its token (0600); `terra install` \
         keeps both, the node reports its boots, and [update] source = \"controller\" follows \
         its rollouts",
        token_file.display()
    ))
}

/// Runs the command line `args` (without the program name). Usage errors exit 2 with
/// clap's message (and a suggestion when one is near), help and version 0, a failed
/// command 1.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once(OsString::from(NAME)).chain(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terra: {e}");
            ExitCode::from(1)
        }
    }
}

/// The command line's definition, for completions, man pages and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(a) => cmd_serve(a),
        Command::Node(a) => cmd_node(a),
        Command::Rollout(a) => cmd_rollout(a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), NAME, &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => write_man_pages(&dir),
    }
}

/// terra-controller.1 and one page per (visible) subcommand, named
/// terra-controller-<command>[-<sub>].1.
fn write_man_pages(dir: &Path) -> Result<(), CliError> {
    let failed = |source| CliError::Man {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(failed)
}

fn cmd_serve(a: ServeArgs) -> Result<(), CliError> {
    let mut opts = ServeOptions::new(&a.state);
    opts.database = a.database;
    opts.listen = a.listen;
    // Empty means "derived" to serve(): http://ADDR, and the listening portal.
    opts.public_url = a.public_url.unwrap_or_default();
    opts.iscsi_listen = a.iscsi_listen;
    opts.iscsi_portal = a.iscsi_portal.unwrap_or_default();
    if let Some(k) = a.kernel {
        opts.kernel = k;
    }
    if let Some(i) = a.initramfs {
        opts.initramfs = i;
    }
    opts.cmdline = a.cmdline.unwrap_or_default();
    opts.token_file = a.token_file;
    opts.tgtd_control_port = a.tgtd_control_port;
    opts.lun_mb = a.lun_mb;
    opts.verify_keys = a.verify_keys;
    opts.chap = a.chap;
    opts.plain_http = a.plain_http;
    serve::serve(opts).map_err(CliError::Serve)
}

/// A client of the controller `--server`/`$TERRA_SERVER` names, with the token of
/// `--token-file` or `$TERRA_TOKEN`.
fn connect(api: ApiArgs) -> Result<Client, CliError> {
    let token_file = api.token_file.as_deref();
    let server = api
        .server
        .or_else(|| std::env::var("TERRA_SERVER").ok())
        .unwrap_or_else(|| DEFAULT_SERVER.into());
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| CliError::TokenFile {
                    path: path.to_path_buf(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
        None => std::env::var("TERRA_TOKEN").ok(),
    };
    Ok(Client::new(&server, token)?)
}

fn cmd_node(a: NodeArgs) -> Result<(), CliError> {
    let c = connect(a.api)?;
    match a.command {
        NodeCommand::Add {
            file,
            disk_node: true,
        } => {
            let text = std::fs::read_to_string(&file).map_err(|source| CliError::NodeFile {
                path: file.clone(),
                source,
            })?;
            let added = c.add_disk(&text, &file.to_string_lossy())?;
            let said = hand_out(&file, &text, &added)?;
            println!("{said}");
        }
        NodeCommand::Add {
            file,
            disk_node: false,
        } => {
            let text = std::fs::read_to_string(&file).map_err(|source| CliError::NodeFile {
                path: file.clone(),
                source,
            })?;
            let n = c.add(&text, &file.to_string_lossy())?;
            println!(
                "node {} is {} (target {}, initiator {})",
                n.hostname, n.state, n.target, n.initiator
            );
        }
        NodeCommand::List { json } => {
            let nodes = c.list()?;
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
        NodeCommand::Show { name, json } => {
            let n = c.show(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&n).unwrap_or_default());
            } else {
                print!("{}", crate::life::show(&n, now_ms()));
            }
        }
        NodeCommand::Delete { name } => {
            c.delete(&name)?;
            println!("node {name} deleted");
        }
        NodeCommand::Upgrade { name, reference } => {
            let n = c.upgrade(&name, &reference)?;
            println!(
                "node {} boots {} next (tentatively; it falls back by itself)",
                n.hostname, n.version
            );
        }
        NodeCommand::Discovered => {
            let d = c.discovered()?;
            println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
        }
        NodeCommand::Label { name, labels } => {
            let mut req = crate::views::LabelRequest::default();
            for l in labels {
                if let Some((k, v)) = l.split_once('=') {
                    req.set.insert(k.to_string(), v.to_string());
                } else if let Some(k) = l.strip_suffix('-').filter(|k| !k.is_empty()) {
                    req.remove.push(k.to_string());
                } else {
                    return Err(CliError::Label(l));
                }
            }
            let now = c.label(&name, &req)?;
            let shown: Vec<String> = now.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "node {name}: {}",
                if shown.is_empty() {
                    "no labels".into()
                } else {
                    shown.join(" ")
                }
            );
        }
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
        "running_version": n.life.running_version,
        "running_digest": n.life.running_digest,
        "last_boot": n.life.last_boot,
        "last_result": n.life.last_result,
        "last_seen": n.life.last_seen,
    })
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
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
        "RUNNING",
        "DIGEST",
        "LAST-BOOT",
        "RESULT",
        "LAST-SEEN",
    ];
    let now = now_ms();
    let rows: Vec<[String; 12]> = nodes
        .iter()
        .map(|n| {
            let l = &n.life;
            [
                n.hostname.clone(),
                n.mac.clone(),
                n.image.clone(),
                n.version.clone(),
                n.initiator.clone(),
                n.target.clone(),
                n.state.clone(),
                or_dash(&l.running_version),
                or_dash(crate::life::short_digest(&l.running_digest)),
                crate::life::ago(l.last_boot, now),
                or_dash(&l.last_result),
                crate::life::ago(l.last_seen, now),
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

fn cmd_rollout(a: RolloutArgs) -> Result<(), CliError> {
    let c = connect(a.api)?;
    let now = now_ms();
    match a.command {
        RolloutCommand::Start {
            reference,
            nodes,
            waves,
            max_unavailable,
            pause_after_failures,
            confirm_within,
        } => {
            let v = c
                .start_rollout(&crate::rollout::StartRequest {
                    reference,
                    nodes,
                    waves,
                    max_unavailable,
                    pause_after_failures,
                    confirm_within,
                })
                .map_err(CliError::Rollout)?;
            println!(
                "rollout {} started: {} ({}), {} node(s) in {} wave(s)",
                v.rollout.id,
                v.rollout.reference,
                v.rollout.digest,
                v.counts.values().sum::<u64>(),
                v.waves_total
            );
        }
        RolloutCommand::Status { id: Some(id), json } => {
            let v = c.rollout(&id).map_err(CliError::Rollout)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", crate::life::rollout(&v, now));
            }
        }
        RolloutCommand::Status { id: None, json } => {
            let all = c.rollouts().map_err(CliError::Rollout)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else if all.is_empty() {
                println!("no rollouts");
            } else {
                for v in &all {
                    print!("{}", crate::life::rollout(v, now));
                }
            }
        }
        RolloutCommand::Pause { id } => action(&c, &id, "pause", now)?,
        RolloutCommand::Resume { id } => action(&c, &id, "resume", now)?,
        RolloutCommand::Abort { id } => action(&c, &id, "abort", now)?,
    }
    Ok(())
}

fn action(c: &Client, id: &str, what: &str, now: i64) -> Result<(), CliError> {
    let v = c.rollout_action(id, what).map_err(CliError::Rollout)?;
    print!("{}", crate::life::rollout(&v, now));
    Ok(())
}
