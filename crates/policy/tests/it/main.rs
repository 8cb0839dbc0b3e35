//! Integration tests of nico-policy, in one binary to keep linking cheap.

mod decisions;
mod duration;
