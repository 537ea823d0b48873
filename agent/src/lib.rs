//! cbt-agent as a library: the pieces the binary is made of, also used by
//! the end-to-end tests and benchmarks.

pub mod book;
pub mod capture;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod output;
pub mod page;
pub mod replay;
pub mod secret;
pub mod store;
pub mod upload;
