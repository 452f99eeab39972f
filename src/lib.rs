//! etcd-await-election: run a command only while this instance leads an etcd election.
//!
//! The modules follow the data: [`config`] turns the environment into a validated configuration,
//! [`etcd`] talks to etcd's JSON gateway, [`election`] runs etcd's election recipe on top of it, and
//! [`supervise`] starts, signals and reaps the command while leadership holds. [`log`] writes the
//! one-line-per-state-change log they all share; [`status`] holds what this instance knows
//! and serves it over HTTP.

pub mod config;
pub mod election;
pub mod etcd;
pub mod log;
pub mod status;
pub mod supervise;
