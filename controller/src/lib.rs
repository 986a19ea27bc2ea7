//! The Terra controller (ARCHITECTURE.md, "The controller"): provisions fleets of diskless nodes. Each node
//! gets a copy-on-write clone of its image's golden LUN, its own iSCSI target on tgtd bound
//! to its own initiator, and an iPXE entry served over HTTP; state lives in SQLite or
//! PostgreSQL.

pub mod boot;
pub mod cli;
pub mod client;
pub mod db;
pub mod http;
pub mod life;
pub mod node;
pub mod page;
pub mod provision;
pub mod reports;
pub mod rollout;
pub mod serve;
pub mod storage;
pub mod tgt;
pub mod views;
pub mod waves;
