//! `terra-controller`'s command line (issue 23): help, suggestions, completions and man
//! pages come from its clap definition; usage errors exit 2, as `terra`'s do.

use std::process::{Command, Output};

const PROGRAM: &str = env!("CARGO_BIN_EXE_terra-controller");

fn controller(args: &[&str]) -> Output {
    Command::new(PROGRAM)
        .args(args)
        .env_remove("TERRA_SERVER")
        .env_remove("TERRA_TOKEN")
        .output()
        .expect("terra-controller runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_definition_is_consistent() {
    terra_controller::cli::command().debug_assert();
}

#[test]
fn serve_help_lists_every_flag_with_its_default() {
    let out = controller(&["serve", "--help"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    for flag in [
        "--state <DIR>",
        "--database <URL>",
        "--listen <ADDR>",
        "--public-url <URL>",
        "--iscsi-listen <ADDR>",
        "--iscsi-portal <H:P>",
        "--kernel <FILE>",
        "--initramfs <FILE>",
        "--cmdline <ARGS>",
        "--chap",
        "--token-file <FILE>",
        "--tgtd-control-port <N>",
        "--lun-size <MIB>",
        "--plain-http",
        "--verify-key <PEM>",
        "[default: /var/lib/terra/controller]",
        "[default: 127.0.0.1:8080]",
        "[default: 127.0.0.1:3260]",
        "[default: 13260]",
        "[default: 4096]",
    ] {
        assert!(stdout.contains(flag), "{flag} missing:\n{stdout}");
    }
}

#[test]
fn node_help_lists_its_commands_and_options() {
    let out = controller(&["node", "--help"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("Manage the nodes of a Terra controller"));
    for word in [
        "add",
        "list",
        "show",
        "delete",
        "upgrade",
        "discovered",
        "--server <URL>",
        "--token-file <FILE>",
    ] {
        assert!(stdout.contains(word), "{word} missing:\n{stdout}");
    }
    let out = controller(&["node", "list", "--help"]);
    assert!(text(&out).0.contains("--json"));
}

#[test]
fn a_misspelled_command_or_flag_is_named_with_the_one_meant() {
    for (args, meant) in [
        (&["serv"][..], "'serve'"),
        (&["node", "lst"][..], "'list'"),
        (&["node", "upgarde", "n1", "r"][..], "'upgrade'"),
        (&["serve", "--lun-szie", "8"][..], "'--lun-size'"),
    ] {
        let out = controller(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("similar") && stderr.contains(meant),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn usage_errors_exit_2_before_anything_runs() {
    for args in [
        &["serve", "--listen", "not-an-address"][..],
        &["serve", "--lun-size", "big"][..],
        &["node", "show"][..],
        &["node", "list", "extra"][..],
        &["node"][..],
        &[][..],
    ] {
        let out = controller(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", text(&out));
    }
}

#[test]
fn node_options_go_before_or_after_the_command() {
    // Nothing listens on port 1: both orders reach the client, which fails with exit 1.
    for args in [
        &["node", "--server", "http://127.0.0.1:1", "list", "--json"][..],
        &["node", "list", "--server", "http://127.0.0.1:1"][..],
    ] {
        let out = controller(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("terra: terra node: "), "{stderr}");
    }
    let out = controller(&["node", "--token-file", "/nonexistent/token", "list"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("--token-file /nonexistent/token"),
        "{stderr}"
    );
}

#[test]
fn completions_name_the_commands_and_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let out = controller(&["completions", shell]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{shell}: {stderr}");
        for word in ["serve", "node", "discovered", "iscsi-portal", "server"] {
            assert!(stdout.contains(word), "{shell}: {word} missing");
        }
    }
    assert_eq!(controller(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = controller(&["man", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    for page in [
        "terra-controller.1",
        "terra-controller-serve.1",
        "terra-controller-node.1",
        "terra-controller-node-add.1",
        "terra-controller-node-upgrade.1",
    ] {
        let p = dir.path().join(page);
        assert!(p.is_file(), "{page} missing");
    }
    let serve = std::fs::read_to_string(dir.path().join("terra-controller-serve.1")).unwrap();
    assert!(serve.contains("verify\\-key"), "{serve}");
}
