//! Looking for secrets where none may be: log lines and files on disk are searched for
//! bearer tokens (JWT-shaped, as the dev cluster and Kubernetes mint them), PEM blocks, and
//! base64 DER (the body of a key or CSR with its PEM armour taken off), plus any exact secret
//! a test knows about (a key it read out of a volume, a token it minted).

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// One thing found that must not be there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The file it was found in.
    pub file: PathBuf,
    /// The 1-based line number.
    pub line: usize,
    /// What was found (never the secret itself).
    pub what: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

/// What one line holds that it must not, or `None`. `known` are exact secrets (or long
/// enough fragments of them) that must not appear either.
pub fn scan_line(line: &str, known: &[String]) -> Option<&'static str> {
    let line = &strip_ansi(line);
    if line.contains("-----BEGIN") {
        return Some("a PEM block");
    }
    if known
        .iter()
        .any(|secret| !secret.is_empty() && line.contains(secret.as_str()))
    {
        return Some("a secret the test handed out or read from a volume");
    }
    for word in line.split(|c: char| !is_token_char(c)) {
        if looks_like_jwt(word) {
            return Some("a JWT-shaped bearer token");
        }
    }
    for word in line.split(|c: char| !is_base64_char(c)) {
        if let Some(what) = encoded_secret(word) {
            return Some(what);
        }
    }
    None
}

/// What a line of a file on disk holds that must never be on disk: a bearer token (keys and
/// certificates belong in volumes, tokens nowhere).
pub fn token_in_line(line: &str) -> Option<&'static str> {
    line.split(|c: char| !is_token_char(c))
        .any(looks_like_jwt)
        .then_some("a JWT-shaped bearer token")
}

/// Scans every line of every regular file under `root` (recursively, symlinks not
/// followed) with [`scan_line`].
pub fn scan_tree(root: &Path, known: &[String]) -> Vec<Finding> {
    scan_tree_with(root, |line| scan_line(line, known))
}

/// Scans every line of every regular file under `root` with `check`.
pub fn scan_tree_with(root: &Path, check: impl Fn(&str) -> Option<&'static str>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        } else if meta.is_file() {
            findings.extend(scan_file_with(&path, &check));
        }
    }
    findings
}

/// Scans one file, line by line (invalid UTF-8 read lossily), with [`scan_line`].
pub fn scan_file(path: &Path, known: &[String]) -> Vec<Finding> {
    scan_file_with(path, &|line| scan_line(line, known))
}

fn scan_file_with(path: &Path, check: &dyn Fn(&str) -> Option<&'static str>) -> Vec<Finding> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            check(line).map(|what| Finding {
                file: path.to_owned(),
                line: i + 1,
                what,
            })
        })
        .collect()
}

/// The line without terminal colour sequences (`ESC [ ... m`), which would otherwise glue
/// themselves to the value that follows.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Padding is left out: a `=` more often separates a field from its value.
fn is_base64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/')
}

/// Three base64url segments, the first decoding to a JSON header (`{"` is `eyJ`).
fn looks_like_jwt(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3 && parts[0].starts_with("eyJ") && parts.iter().all(|p| p.len() >= 8)
}

/// A long base64 word that decodes to a long DER SEQUENCE (the shape of every key, CSR and
/// certificate), or to PEM text (how a CertificateRequest's JSON
/// carries a CSR): nothing a log line should hold.
fn encoded_secret(word: &str) -> Option<&'static str> {
    if word.len() < 64 {
        return None;
    }
    // A word cut out of a longer line may carry a partial quantum: decode what is whole.
    let whole = &word[..word.len() - word.len() % 4];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(whole)
        .ok()?;
    if bytes.starts_with(b"-----BEGIN") {
        return Some("base64 of a PEM block");
    }
    // A SEQUENCE announcing at least 64 bytes; the word may be cut short, so the rest of
    // the length is not required to be there.
    let der = match bytes.as_slice() {
        [0x30, 0x81 | 0x82, ..] => true,
        [0x30, len, ..] => (0x40..0x80).contains(len),
        _ => false,
    };
    der.then_some("base64 DER (a key, CSR or certificate)")
}

/// A fragment of the base64 body of a PEM file's first block, without armour or line breaks:
/// what a log line would hold if the key had leaked without its PEM header. The first 48
/// characters are skipped (a PKCS#8 header is the same for every key of a kind); the next
/// 48 are unique to the key.
pub fn pem_body_fragment(pem: &str) -> Option<String> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    body.get(48..96).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_secret_is_found_and_ordinary_lines_pass() {
        let key = rcgen::KeyPair::generate().unwrap();
        let key_body = pem_body_fragment(&key.serialize_pem()).unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        let csr_der = params.serialize_request(&key).unwrap().der().to_vec();
        let csr_b64 = base64::engine::general_purpose::STANDARD.encode(&csr_der);
        let other_key = rcgen::KeyPair::generate().unwrap();
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(other_key.serialize_der());
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLWJ5dGVz";
        let csr_pem_b64 = base64::engine::general_purpose::STANDARD
            .encode(params.serialize_request(&key).unwrap().pem().unwrap());
        let cases: [(String, Option<&str>); 9] = [
            (
                format!("TRACE spec={{\"request\":\"{csr_pem_b64}\"}}"),
                Some("base64 of a PEM block"),
            ),
            (
                format!("INFO csi-node: request header authorization=\"Bearer {jwt}\""),
                Some("a JWT-shaped bearer token"),
            ),
            (
                "DEBUG key=-----BEGIN PRIVATE KEY-----".to_owned(),
                Some("a PEM block"),
            ),
            (
                format!("TRACE body={{\"request\":\"{csr_b64}\"}}"),
                Some("base64 DER (a key, CSR or certificate)"),
            ),
            (
                format!("TRACE \u{1b}[3mkey\u{1b}[0m\u{1b}[2m=\u{1b}[0m{key_b64}"),
                Some("base64 DER (a key, CSR or certificate)"),
            ),
            (
                format!("weird {}", &key_body[..]),
                Some("a secret the test handed out or read from a volume"),
            ),
            (
                "INFO certificate written volume_id=csi-0a1b serial=4f2e9a".to_owned(),
                None,
            ),
            (
                "DEBUG resourceVersion=123 name=web-0-x7k2p uid=3f1c2d4e-aaaa".to_owned(),
                None,
            ),
            (
                // Long base64 that is not DER (a hash) passes.
                format!("digest={}", "QUJD".repeat(30)),
                None,
            ),
        ];
        for (line, expected) in &cases {
            assert_eq!(
                scan_line(line, std::slice::from_ref(&key_body)),
                *expected,
                "{line}"
            );
        }
    }

    #[test]
    fn a_tree_scan_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("clean.json"), "{\"volume\":\"x\"}\n").unwrap();
        std::fs::write(
            dir.path().join("sub/leak.log"),
            "ok\nok\ntoken eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrdWJlIn0.c2lnbmF0dXJl\n",
        )
        .unwrap();
        let findings = scan_tree(dir.path(), &[]);
        let expected = [Finding {
            file: dir.path().join("sub/leak.log"),
            line: 3,
            what: "a JWT-shaped bearer token",
        }];
        assert_eq!(findings, expected);
        assert_eq!(scan_tree_with(dir.path(), token_in_line), expected);
        // A key on disk is not a token.
        std::fs::write(dir.path().join("tls.key"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
        assert_eq!(scan_tree_with(dir.path(), token_in_line), expected);
    }
}
