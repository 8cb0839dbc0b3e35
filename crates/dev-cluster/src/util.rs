//! Small helpers shared by every module: time stamps in the API's formats, random
//! identifiers, and JSON navigation.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use jiff::Timestamp;
use serde_json::{Map, Value};

/// `metav1.Time`: RFC 3339 in UTC with seconds precision.
pub(crate) fn format_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metav1.MicroTime`: RFC 3339 in UTC with exactly six fractional digits.
pub(crate) fn format_micro_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// The current time as a `metav1.Time` string.
pub(crate) fn now_time() -> String {
    format_time(Timestamp::now())
}

/// Fills `buf` with random bytes. A failing system RNG leaves the buffer as it was; the
/// values made from it are identifiers, not secrets.
fn random_bytes(buf: &mut [u8]) {
    if SystemRandom::new().fill(buf).is_err() {
        for b in buf.iter_mut() {
            *b = fastish_fallback();
        }
    }
}

fn fastish_fallback() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos % 251) as u8
}

/// A random version-4 UUID in its canonical text form.
pub(crate) fn new_uid() -> String {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The five-character suffix `metadata.generateName` gets, from the same alphabet the API
/// server uses (no vowels, no look-alike digits).
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    random_bytes(&mut b);
    b.iter()
        .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
        .collect()
}

/// `metadata` of an object, if it is a JSON object.
pub(crate) fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// A string field of `metadata`, or "" when absent.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata` as a mutable map, created when missing or not an object.
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(map) = obj else {
        // invariant: `obj` was made an object just above.
        unreachable!("object checked above")
    };
    let entry = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        // invariant: `entry` was made an object just above.
        _ => unreachable!("metadata checked above"),
    }
}

/// Follows a dotted path (`spec.issuerRef.name`) through nested objects.
pub(crate) fn get_path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, key| v.get(key))
}

/// The JSON type name the CRD schema validator reports for a value.
pub(crate) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses RFC 3339 text into a timestamp.
pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_the_api_formats() {
        let ts: Timestamp = "2026-12-04T16:52:22.198963123Z"
            .parse()
            .expect("valid time");
        assert_eq!(format_time(ts), "2026-12-04T16:52:22Z");
        assert_eq!(format_micro_time(ts), "2026-12-04T16:52:22.198963Z");
    }

    #[test]
    fn uids_are_v4() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
    }
}
