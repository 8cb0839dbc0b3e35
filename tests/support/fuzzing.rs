//! Corpus-driven fuzzing on stable Rust, shared by the crates whose parsers see untrusted
//! bytes (each includes this file with `#[path]`; it needs nothing but std and proptest).
//!
//! A fuzz target is a property test named `fuzz_<target>` with a corpus: a directory of
//! inputs, one per file, kept in the repository next to the target's tests. Every run first
//! replays the whole corpus through the target, then lets proptest feed it mutations of
//! corpus entries (bit flips, inserted, removed and repeated bytes, truncations, splices of
//! two entries) besides fresh random input. CI runs a bounded number of cases;
//! `cargo xtask fuzz --time N` raises `PROPTEST_CASES` and keeps going with fresh seeds.
//!
//! An input that ever fails is added to the corpus (so every later run replays it) and, when
//! it revealed a defect, gets a named regression test beside the fix.

#![allow(
    dead_code,
    reason = "each crate's fuzz tests use their own subset of the helpers"
)]

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;

/// The number of cases a fuzz target runs: `PROPTEST_CASES` when set (the longer fuzz runs
/// set it), otherwise `default`, sized to keep CI quick.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A proptest configuration running [`cases`]`(default)` cases.
pub(crate) fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        ..ProptestConfig::default()
    }
}

/// Every input of a corpus directory, with its file name, in name order. A missing or empty
/// corpus is a broken checkout, not a pass.
pub(crate) fn corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("failed to read the corpus {}: {e}", dir.display()));
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()));
            let path = entry.path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
            (entry.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the corpus {} is empty", dir.display());
    inputs
}

/// Only the bytes of [`corpus`].
pub(crate) fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    corpus(dir).into_iter().map(|(_, bytes)| bytes).collect()
}

/// One change to an input.
#[derive(Clone, Copy, Debug)]
enum Edit {
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Insert a byte.
    Insert(Index, u8),
    /// Remove up to this many bytes.
    Remove(Index, u8),
    /// Repeat a run of up to this many bytes in place.
    Repeat(Index, u8),
    /// Cut the input short.
    Truncate(Index),
    /// Replace the tail with the tail of another corpus entry.
    Splice(Index, Index, Index),
    /// Overwrite a byte with one that parsers treat specially.
    Special(Index, Index),
}

/// Bytes that move parsers onto unusual paths: lengths, separators, escapes, NUL, high bits.
const SPECIAL: &[u8] = b"\x00\x01\x7f\x80\x81\x82\xff/.:%{}\"\\\n-=+0";

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(at, mask)| Edit::Flip(at, mask)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        (any::<Index>(), 1u8..16).prop_map(|(at, len)| Edit::Remove(at, len)),
        (any::<Index>(), 1u8..16).prop_map(|(at, len)| Edit::Repeat(at, len)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(at, other, from)| Edit::Splice(at, other, from)),
        (any::<Index>(), any::<Index>()).prop_map(|(at, which)| Edit::Special(at, which)),
    ]
}

fn apply(mut input: Vec<u8>, edits: &[Edit], seeds: &[Vec<u8>]) -> Vec<u8> {
    for edit in edits {
        let len = input.len();
        match *edit {
            Edit::Flip(at, mask) if len > 0 => input[at.index(len)] ^= mask,
            Edit::Insert(at, byte) => input.insert(at.index(len + 1), byte),
            Edit::Remove(at, count) if len > 0 => {
                let start = at.index(len);
                let end = (start + usize::from(count)).min(len);
                input.drain(start..end);
            }
            Edit::Repeat(at, count) if len > 0 => {
                let start = at.index(len);
                let end = (start + usize::from(count)).min(len);
                let run = input[start..end].to_vec();
                input.splice(end..end, run);
            }
            Edit::Truncate(at) => input.truncate(at.index(len + 1)),
            Edit::Splice(at, other, from) => {
                let donor = &seeds[other.index(seeds.len())];
                input.truncate(at.index(len + 1));
                input.extend_from_slice(&donor[from.index(donor.len() + 1)..]);
            }
            Edit::Special(at, which) if len > 0 => {
                input[at.index(len)] = SPECIAL[which.index(SPECIAL.len())];
            }
            // Edits that need a byte to work on leave an empty input alone.
            _ => {}
        }
    }
    input
}

/// Corpus entries with one to eight edits each: most stay close enough to valid input to
/// reach the deep branches of a parser.
pub(crate) fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "mutations need at least one seed");
    let shared = Arc::new(seeds);
    let pick = 0..shared.len();
    (pick, prop::collection::vec(edit(), 1..8))
        .prop_map(move |(which, edits)| apply(shared[which].clone(), &edits, &shared))
}

/// What a fuzz target is fed: mostly mutated corpus entries, some untouched ones and some
/// random bytes up to `max_len`.
pub(crate) fn inputs(seeds: Vec<Vec<u8>>, max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let exact = prop::sample::select(seeds.clone());
    prop_oneof![
        6 => mutated(seeds),
        1 => exact,
        2 => prop::collection::vec(any::<u8>(), 0..max_len),
    ]
}

/// [`inputs`], as text (lossily: fuzzing a `&str` API needs UTF-8).
pub(crate) fn text_inputs(seeds: Vec<Vec<u8>>, max_len: usize) -> impl Strategy<Value = String> {
    inputs(seeds, max_len).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// A list of one to eight edits, kept apart from the input it will change: for targets that
/// mutate one layer of a structured input (the signed part of a CSR, a path inside a
/// request) and rebuild the rest around it.
#[derive(Clone, Debug)]
pub(crate) struct Mutation(Vec<Edit>);

impl Mutation {
    /// `input` with the edits applied; splices take their tails from `donors` (at least
    /// one).
    pub(crate) fn apply(&self, input: Vec<u8>, donors: &[Vec<u8>]) -> Vec<u8> {
        assert!(!donors.is_empty(), "mutations need at least one donor");
        apply(input, &self.0, donors)
    }
}

/// Strategy for a [`Mutation`].
pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop::collection::vec(edit(), 1..8).prop_map(Mutation)
}
