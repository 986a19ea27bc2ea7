//! The controller's database on both backends it supports: a real SQLite file and a real
//! PostgreSQL server the test starts (lab::postgres). One schema, migrations applied once,
//! refusals that name the node holding a hostname or MAC, target ids unique under
//! concurrent adds (also from two controllers' pools on one PostgreSQL database), the
//! journal, and discovery.

use lab::postgres::Postgres;
use terra_controller::db::{AddError, Db, Incoming, NodeRow, KEEP_EVENTS};
use terra_init::report::message::{self, Event, Message};

fn node(host: &str, mac: &str, controller: &str) -> NodeRow {
    NodeRow {
        hostname: host.into(),
        mac: mac.into(),
        image: "oci:/images:v1".into(),
        digest: "sha256:00".into(),
        version: String::new(),
        initiator: format!("iqn.2024-01.org.terra-os:node.{host}"),
        target: format!("iqn.2024-01.org.terra-os:target.{host}"),
        portal: "10.0.2.2:3260".into(),
        controller: controller.into(),
        tid: 0,
        state: "provisioning".into(),
        reason: String::new(),
        config: "hostname = \"x\"".into(),
        chap: String::new(),
        updated: 0,
        report_token: format!("tok-{host}"),
    }
}

/// A boot (or confirmation) report of `host` in boot `boot_id`, running `version`.
fn report(host: &str, boot_id: &str, event: Event, version: &str) -> Message {
    Message {
        event,
        hostname: host.into(),
        boot_id: boot_id.into(),
        sent_by: "stage0".into(),
        version: Some(message::Version {
            name: version.into(),
            digest: format!("sha256:{version}"),
            why: "default".into(),
            ..Default::default()
        }),
        reason: None,
        phases: Vec::new(),
        initramfs_ms: 100.0,
        uptime_at_start_ms: 50.0,
    }
}

/// Reports: the token finds its node, an event sent twice counts once, the node's life
/// follows its events, and only the newest KEEP_EVENTS stay.
async fn reports(db: &Db, again: &Db) {
    assert_eq!(
        db.node_by_token("tok-n1").await.unwrap().unwrap().hostname,
        "n1"
    );
    assert!(db.node_by_token("").await.unwrap().is_none());
    assert!(db.node_by_token("tok-nobody").await.unwrap().is_none());
    let boot = report("n1", "b1", Event::Boot, "v2");
    let text = String::from_utf8(boot.to_bytes()).unwrap();
    assert!(db
        .record_event("n1", &boot, &text, "tentative")
        .await
        .unwrap());
    // Sent again (stage0's send timed out after the controller stored it; the booted
    // system sends it once more): counted once.
    assert!(!again
        .record_event("n1", &boot, &text, "tentative")
        .await
        .unwrap());
    let confirmed = report("n1", "b1", Event::Confirmed, "v2");
    assert!(db
        .record_event("n1", &confirmed, "{}", "confirmed")
        .await
        .unwrap());
    let lives = again.lives().await.unwrap();
    let (_, life) = lives.iter().find(|(h, _)| h == "n1").unwrap();
    assert_eq!(life.running_version, "v2");
    assert_eq!(life.running_digest, "sha256:v2");
    assert_eq!(life.last_result, "confirmed");
    assert!(life.last_boot > 0 && life.last_seen >= life.last_boot);
    let events = db.events("n1", 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events.iter().find(|e| e.event == "boot").unwrap().report["initramfs_ms"],
        100.0
    );
    // Retention: the newest KEEP_EVENTS are kept.
    for i in 0..KEEP_EVENTS + 5 {
        let m = report("n2", &format!("boot-{i}"), Event::Boot, "v1");
        db.record_event("n2", &m, "{}", "booted").await.unwrap();
        // Distinct arrival times, so "newest" is well defined.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let kept = db.events("n2", 1000).await.unwrap();
    assert_eq!(kept.len() as i64, KEEP_EVENTS);
    assert_eq!(kept[0].boot_id, format!("boot-{}", KEEP_EVENTS + 4));
    // One batch of many (as the writer commits them): a key twice in the batch is new
    // once, a node's row ends as its last event says, its running version as its boot.
    let incoming = |host: &str, m: Message, result: &str| Incoming {
        hostname: host.into(),
        text: String::from_utf8(m.to_bytes()).unwrap(),
        message: m,
        result: result.into(),
    };
    let batch = vec![
        incoming("n1", report("n1", "b2", Event::Boot, "v3"), "tentative"),
        incoming("n2", report("n2", "z1", Event::Boot, "v9"), "booted"),
        incoming("n1", report("n1", "b2", Event::Boot, "v3"), "tentative"),
        incoming(
            "n1",
            report("n1", "b1", Event::Confirmed, "v2"),
            "confirmed",
        ),
        incoming("n1", report("n1", "b2", Event::Rejected, "v3"), "rejected"),
    ];
    assert_eq!(
        again.record_events(&batch).await.unwrap(),
        [true, true, false, false, true]
    );
    let lives = db.lives().await.unwrap();
    let life = |h: &str| lives.iter().find(|(n, _)| n == h).unwrap().1.clone();
    assert_eq!(
        (
            life("n1").running_version.as_str(),
            life("n1").last_result.as_str()
        ),
        ("v3", "rejected")
    );
    assert_eq!(life("n2").running_digest, "sha256:v9");
    let kept = db.events("n2", 1000).await.unwrap();
    assert_eq!(kept.len() as i64, KEEP_EVENTS, "retention in a batch too");
    assert!(kept.iter().any(|e| e.boot_id == "z1"));
    // A deleted node's events go with it.
    db.delete_node("n2").await.unwrap();
    assert!(db.events("n2", 1000).await.unwrap().is_empty());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn exercise(url: &str) {
    let db = Db::open(url).await.expect("open");
    // A second open (a restart, or a second controller) finds the schema made.
    let again = Db::open(url).await.expect("open again");
    assert_eq!(db.schema_version().await.unwrap(), 3);
    assert_eq!(again.schema_version().await.unwrap(), 3);

    let a = db
        .add_node(node("a", "52:54:00:00:00:0a", "c1"))
        .await
        .unwrap();
    assert_eq!(a.tid, 1);
    for (dup, field, value) in [
        (node("a", "52:54:00:00:00:0b", "c1"), "hostname", "a"),
        (
            node("b", "52:54:00:00:00:0a", "c1"),
            "mac",
            "52:54:00:00:00:0a",
        ),
    ] {
        match again.add_node(dup).await {
            Err(AddError::Taken {
                field: f,
                value: v,
                node,
            }) => {
                assert_eq!((f, v.as_str(), node.as_str()), (field, value, "a"));
            }
            other => panic!("expected {field} taken, got {other:?}"),
        }
    }

    // Twenty adds at once through two pools: every one gets its own tid.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = if i % 2 == 0 {
            db.clone()
        } else {
            again.clone()
        };
        tasks.push(tokio::spawn(async move {
            db.add_node(node(
                &format!("n{i}"),
                &format!("52:54:00:00:01:{i:02x}"),
                "c1",
            ))
            .await
            .map(|n| n.tid)
        }));
    }
    let mut tids = Vec::new();
    for t in tasks {
        tids.push(t.await.unwrap().expect("concurrent add"));
    }
    tids.sort();
    assert_eq!(tids, (2..22).collect::<Vec<i64>>());
    // Another controller's tids are its own.
    let other = db
        .add_node(node("o", "52:54:00:00:02:00", "c2"))
        .await
        .unwrap();
    assert_eq!(other.tid, 1);

    assert_eq!(db.nodes().await.unwrap().len(), 22);
    reports(&db, &again).await;
    assert_eq!(
        db.node_by_mac("52:54:00:00:00:0a")
            .await
            .unwrap()
            .unwrap()
            .hostname,
        "a"
    );
    assert!(db.transition("a", "provisioning", "ready").await.unwrap());
    assert!(!db.transition("a", "provisioning", "ready").await.unwrap());

    db.journal("a", "lun", "/x/a.img").await.unwrap();
    db.journal("a", "target", "1").await.unwrap();
    let steps = again.steps("a").await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.seq, s.step.as_str()))
            .collect::<Vec<_>>(),
        [(1, "lun"), (2, "target")]
    );
    db.unjournal("a", 2).await.unwrap();
    assert_eq!(db.steps("a").await.unwrap().len(), 1);
    db.delete_node("a").await.unwrap();
    assert!(db.node("a").await.unwrap().is_none());
    assert!(db.steps("a").await.unwrap().is_empty());

    for _ in 0..3 {
        db.discovered("52:54:00:99:00:01").await.unwrap();
    }
    let d = again.discoveries().await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].requests, 3);
}

#[test]
fn sqlite_holds_the_schema_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("terra.db").display()
    );
    runtime().block_on(exercise(&url));
}

#[test]
fn postgresql_holds_the_same_schema_for_two_controllers() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    runtime().block_on(exercise(&pg.url()));
}

#[test]
fn a_bad_url_is_named() {
    let err = runtime()
        .block_on(Db::open("mysql://x@y/z"))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("mysql://x@y/z"), "{err}");
    let err = runtime()
        .block_on(Db::open(
            "postgres://terra:hunter2hunter2@127.0.0.1:1/terra",
        ))
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("hunter2"),
        "{msg}"
    );
}
