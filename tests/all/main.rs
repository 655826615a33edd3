//! The integration tests, one binary (each test binary links the whole crate, so one binary
//! instead of sixteen is minutes of CI on two cores). `tests/artifacts.rs` stays a binary of its
//! own: it changes process environment variables that tests here read.
//!
//! Every test that runs a model takes its device from [`common::device`]: `EPA_TEST_DEVICE=wgpu
//! cargo test --features wgpu-unfused --test all -- <filter>` runs them on burn's GPU code path.

mod common;

mod cli_score;
mod data_batch;
mod data_read;
mod demo;
mod distributed;
mod eval;
mod generate;
mod gguf;
mod gold;
mod golden;
mod lab;
mod lora;
mod losses;
mod model;
mod online;
mod reliability;
mod reward;
mod smollm2;
mod text;
mod train;
mod trl;
