//! `*` patterns as approver-policy writes them: `*` stands for any run of characters
//! (including none and including dots), everything else matches itself exactly.

/// A pattern, matched byte by byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Wildcard {
    pattern: String,
}

impl Wildcard {
    pub(crate) fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `value` matches. Greedy matching with one backtrack point keeps this linear
    /// in practice and quadratic at worst, whatever the input.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let (pattern, value) = (self.pattern.as_bytes(), value.as_bytes());
        let (mut p, mut v) = (0, 0);
        // The last `*` seen and the value position it was tried at.
        let mut star: Option<(usize, usize)> = None;
        while v < value.len() {
            if p < pattern.len() && pattern[p] == b'*' {
                star = Some((p, v));
                p += 1;
            } else if p < pattern.len() && pattern[p] == value[v] {
                p += 1;
                v += 1;
            } else if let Some((star_p, star_v)) = star {
                // Let the last `*` swallow one more byte and try again after it.
                p = star_p + 1;
                v = star_v + 1;
                star = Some((star_p, star_v + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&b| b == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let rows = [
            ("*", "", true),
            ("*", "anything.at.all", true),
            ("", "", true),
            ("", "x", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.example.com.evil", false),
            ("web-*.svc", "web-1.svc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "x", true),
            ("10.0.0.*", "10.0.0.17", true),
            ("10.0.0.*", "10.0.1.17", false),
            ("Issuer", "issuer", false),
        ];
        for (pattern, value, expected) in rows {
            assert_eq!(
                Wildcard::new(pattern).matches(value),
                expected,
                "{pattern:?} against {value:?}"
            );
        }
    }

    /// The same language as a plain recursive matcher (exponential, so inputs stay small).
    fn reference(pattern: &[u8], value: &[u8]) -> bool {
        match pattern.split_first() {
            None => value.is_empty(),
            Some((b'*', rest)) => (0..=value.len()).any(|i| reference(rest, &value[i..])),
            Some((c, rest)) => value.first() == Some(c) && reference(rest, &value[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(pattern in "[ab*.]{0,8}", value in "[ab.]{0,10}") {
            prop_assert_eq!(
                Wildcard::new(pattern.clone()).matches(&value),
                reference(pattern.as_bytes(), value.as_bytes())
            );
        }
    }
}
