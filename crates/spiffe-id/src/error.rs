//! The one error type for rejected SPIFFE IDs and trust domains.
//!
//! Every message names the offending input and says what would have been accepted, because
//! these messages end up, verbatim, in Denied conditions that a workload owner has to act on.

/// Why a SPIFFE ID or a trust domain was rejected.
///
/// Byte offsets are relative to the component that is named in the message (the trust domain
/// or the path), so that the offset and the quoted text line up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input was the empty string.
    #[error("spiffe id is empty: expected spiffe://<trust domain>/<path>")]
    Empty,

    /// The whole ID is longer than [`crate::MAX_ID_LEN`] bytes.
    #[error("spiffe id is {len} bytes long: at most 2048 bytes are allowed")]
    TooLong {
        /// Length of the presented ID in bytes.
        len: usize,
    },

    /// The input does not start with exactly `spiffe://` (lower case, two slashes).
    #[error("{id:?} does not start with \"spiffe://\": the scheme must be exactly spiffe://")]
    WrongScheme {
        /// The presented ID.
        id: String,
    },

    /// Nothing stands between `spiffe://` and the path.
    #[error("spiffe id {id:?} has no trust domain: expected spiffe://<trust domain>/<path>")]
    MissingTrustDomain {
        /// The presented ID.
        id: String,
    },

    /// A bare trust domain was the empty string.
    #[error("trust domain is empty: expected a name made of a-z, 0-9, '.', '-' and '_'")]
    EmptyTrustDomain,

    /// The trust domain is longer than [`crate::MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error("trust domain is {len} bytes long: at most 255 bytes are allowed")]
    TrustDomainTooLong {
        /// Length of the presented trust domain in bytes.
        len: usize,
    },

    /// The trust domain holds a character outside `[a-z0-9._-]`.
    #[error("invalid character {ch:?} at byte {offset} of trust domain {trust_domain:?}: {rule}")]
    TrustDomainChar {
        /// The presented trust domain.
        trust_domain: String,
        /// The first offending character.
        ch: char,
        /// Its byte offset inside the trust domain.
        offset: usize,
        /// What is allowed instead, or why this character in particular is refused.
        rule: &'static str,
    },

    /// The path holds a character outside `[a-zA-Z0-9._-]` (other than the `/` separators).
    #[error("invalid character {ch:?} at byte {offset} of path {path:?}: {rule}")]
    PathChar {
        /// The presented path, starting with `/`.
        path: String,
        /// The first offending character.
        ch: char,
        /// Its byte offset inside the path.
        offset: usize,
        /// What is allowed instead, or why this character in particular is refused.
        rule: &'static str,
    },

    /// Two slashes follow each other, or the path starts with `//`.
    #[error("empty segment at byte {offset} of path {path:?}: segments must not be empty")]
    EmptySegment {
        /// The presented path.
        path: String,
        /// Byte offset of the empty segment inside the path.
        offset: usize,
    },

    /// The path ends with `/`.
    #[error("path {path:?} ends with '/': a trailing slash is not allowed")]
    TrailingSlash {
        /// The presented path.
        path: String,
    },

    /// A segment is `.` or `..`; such IDs are refused, never normalised.
    #[error(
        "segment {segment:?} at byte {offset} of path {path:?}: \
         '.' and '..' segments are not allowed"
    )]
    DotSegment {
        /// The presented path.
        path: String,
        /// The offending segment, `.` or `..`.
        segment: &'static str,
        /// Byte offset of the segment inside the path.
        offset: usize,
    },
}
