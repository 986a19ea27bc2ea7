//! `terra update`: checks the `[update]` source for a newer image and, by policy, stages
//! it (`terra upgrade --download-only`), applies it (`terra apply`) and reboots into it,
//! inside a maintenance window, after a random delay and a drain hook. A digest that was
//! rejected on this node is never applied again by itself.

pub mod policy;
pub mod run;
pub mod window;

pub use policy::{decide, DiskView, Plan, Policy, PolicyError, Source, Strategy, Then};
pub use run::{update, UpdateError, UpdateOptions, Updated};
pub use window::{Opening, Window};
