//! Integration tests of nico-request-policy, in one binary to keep linking cheap.

mod requests;
mod seed;
