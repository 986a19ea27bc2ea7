//! Boot reports into the database in batches. Thousands of nodes booting at once must be
//! cheap: each report is one small write, and a commit waits for the disk, so one writer
//! takes every report waiting (up to [`BATCH`]) into one transaction — one flush for all
//! of them (group commit). A request is answered once its report is committed; reports of
//! nodes moving in a rollout are judged ([`Controller::on_report`]) before theirs are, so
//! a failure pauses the rollout before the node hears back.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::db::Incoming;
use crate::provision::Controller;

/// The most reports one transaction takes.
pub const BATCH: usize = 256;

/// Reports waiting for the writer before new ones wait for room.
const QUEUE: usize = 4096;

type Ack = oneshot::Sender<Result<(), String>>;

/// Where the HTTP handlers hand reports.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<(Incoming, Ack)>,
}

impl Sink {
    /// Starts the writer for `ctl`'s database.
    pub fn start(ctl: Arc<Controller>) -> Sink {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(ctl, rx));
        Sink { tx }
    }

    /// Stores `report` (with the next batch); Ok once it is committed.
    pub async fn submit(&self, report: Incoming) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((report, ack))
            .await
            .map_err(|_| "the report writer stopped".to_string())?;
        done.await
            .map_err(|_| "the report writer stopped".to_string())?
    }
}

async fn writer(ctl: Arc<Controller>, mut rx: mpsc::Receiver<(Incoming, Ack)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let items: Vec<Incoming> = batch.iter().map(|(i, _)| i.clone()).collect();
        let stored = ctl.db.record_events(&items).await;
        terra_builder::versions::crash_point("report-stored");
        let hosts: Vec<String> = items.iter().map(|i| i.hostname.clone()).collect();
        let moving = match &stored {
            Ok(_) => ctl.db.moving_among(&hosts).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        // Nodes in no rollout hear back at once; the others once their report was judged
        // (a report sent twice is judged twice: the members' moves are conditional).
        let mut judged = Vec::new();
        for (item, ack) in batch.drain(..) {
            match &stored {
                Err(e) => {
                    let _ = ack.send(Err(e.to_string()));
                }
                Ok(_) if moving.contains(&item.hostname) => judged.push((item, ack)),
                Ok(_) => {
                    let _ = ack.send(Ok(()));
                }
            }
        }
        for (item, ack) in judged {
            let r = ctl
                .on_report(&item.hostname, &item.message)
                .await
                .map_err(|e| e.to_string());
            if let Err(e) = &r {
                eprintln!("terra serve: node {}: {e}", item.hostname);
            }
            // The report is stored either way; a rollout that could not be moved now is
            // reconciled when it next advances.
            let _ = ack.send(Ok(()));
        }
    }
}
