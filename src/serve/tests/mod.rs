//! The server end to end: a real HTTP server on a loopback port over a scripted stand-in engine
//! ([`fake::FakeBackend`]) and the built-in model's tokenizer and chat template, spoken to over
//! raw sockets.

mod chat;
mod client;
mod completions;
mod errors;
mod fake;
mod streaming;
