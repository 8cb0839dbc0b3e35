//! Integration tests of nico-csr, in one binary to keep linking cheap.

mod chain;
mod parse;
mod support;
mod svid;
