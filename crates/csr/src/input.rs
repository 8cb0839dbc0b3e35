//! Turning untrusted PEM or DER input into DER, without guessing.

use x509_parser::error::X509Error;
use x509_parser::nom;

/// What a PEM decoding attempt found.
pub(crate) enum Decoded {
    /// Exactly one block, with an accepted label.
    Der(Vec<u8>),
    /// No `-----BEGIN` line at all.
    NotPem,
    /// Broken framing or base64.
    Invalid(pem::PemError),
    /// More than one block.
    Several(usize),
    /// One block, with a label that was not asked for.
    WrongLabel(String),
}

const BEGIN: &[u8] = b"-----BEGIN ";

/// Whether the input contains a PEM begin line.
pub(crate) fn looks_like_pem(input: &[u8]) -> bool {
    input.windows(BEGIN.len()).any(|window| window == BEGIN)
}

/// Whether the input starts like a DER SEQUENCE, the outer shape of every X.509 structure.
pub(crate) fn looks_like_der(input: &[u8]) -> bool {
    input.first() == Some(&0x30)
}

/// Decodes input that must hold exactly one PEM block with one of `labels`.
pub(crate) fn decode_single_pem(input: &[u8], labels: &[&str]) -> Decoded {
    if !looks_like_pem(input) {
        return Decoded::NotPem;
    }
    let mut blocks = match pem::parse_many(input) {
        Ok(blocks) => blocks,
        Err(err) => return Decoded::Invalid(err),
    };
    match blocks.len() {
        // A begin line without a matching end line yields no block at all.
        0 => Decoded::Invalid(pem::PemError::MissingEndTag),
        1 => {
            let block = blocks.remove(0);
            if labels.contains(&block.tag()) {
                Decoded::Der(block.into_contents())
            } else {
                Decoded::WrongLabel(block.tag().to_owned())
            }
        }
        count => Decoded::Several(count),
    }
}

/// Unwraps the parser-combinator layer around an X.509 error.
pub(crate) fn x509_error(err: nom::Err<X509Error>) -> X509Error {
    match err {
        nom::Err::Error(err) | nom::Err::Failure(err) => err,
        nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    }
}
