//! etcd-await-election: run a command only while this instance leads an etcd election.
//!
//! The modules follow the data: [`config`] turns the environment into a validated configuration,
//! [`etcd`] talks to etcd's JSON gateway, [`election`] runs etcd's election recipe on top of it, and
//! [`supervise`] starts, signals, reaps and stops the command while leadership holds. [`log`] writes
//! the one-line-per-state-change log they all share without ever blocking them; [`clock`] is the
//! boot-time clock every safety deadline is measured on; [`status`] shows what the supervisor knows
//! over HTTP; [`query`] is the `leader` subcommand.

pub mod clock;
pub mod config;
pub mod election;
pub mod etcd;
pub mod files;
pub mod log;
pub mod query;
pub mod status;
pub mod supervise;
