//! STUB (uncommitted) matching the helper's planned API.
#![allow(missing_docs, unused)]
use std::path::{Path, PathBuf};
#[derive(Debug)]
pub struct TgtError(pub String);
impl std::fmt::Display for TgtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TgtError {}
#[derive(Debug, Clone)]
pub struct Target {
    pub tid: u32,
    pub iqn: String,
    pub luns: Vec<(u64, PathBuf)>,
    pub initiator_names: Vec<String>,
    pub initiator_addresses: Vec<String>,
    pub accounts: Vec<String>,
    pub outgoing_accounts: Vec<String>,
    pub sessions: Vec<String>,
}
#[derive(Debug, Clone)]
pub struct Tgt {
    port: u16,
}
impl Tgt {
    pub fn new(control_port: u16) -> Tgt {
        Tgt { port: control_port }
    }
    pub fn socket_path(&self) -> PathBuf {
        todo!()
    }
    pub fn ping(&self) -> Result<(), TgtError> {
        todo!()
    }
    pub fn targets(&self) -> Result<Vec<Target>, TgtError> {
        todo!()
    }
    pub fn new_target(&self, tid: u32, iqn: &str) -> Result<(), TgtError> {
        todo!()
    }
    pub fn delete_target(&self, tid: u32) -> Result<(), TgtError> {
        todo!()
    }
    pub fn new_lun(&self, tid: u32, lun: u64, backing: &Path) -> Result<(), TgtError> {
        todo!()
    }
    pub fn bind_initiator_name(&self, tid: u32, iqn: &str) -> Result<(), TgtError> {
        todo!()
    }
    pub fn new_account(&self, user: &str, secret: &str) -> Result<(), TgtError> {
        todo!()
    }
    pub fn delete_account(&self, user: &str) -> Result<(), TgtError> {
        todo!()
    }
    pub fn bind_account(&self, tid: u32, user: &str, outgoing: bool) -> Result<(), TgtError> {
        todo!()
    }
    pub fn accounts(&self) -> Result<Vec<String>, TgtError> {
        todo!()
    }
}
pub fn spawn_tgtd(control_port: u16, portal: &str, log: &Path) -> Result<u32, TgtError> {
    todo!()
}
