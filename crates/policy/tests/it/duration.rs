//! Property tests of the Go duration parser and formatter.

use std::time::Duration;

use nico_policy::duration::{MAX_GO_DURATION, format_go_duration, parse_go_duration};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_parsed_or_refused_without_panic(input in any::<String>()) {
        let _ = parse_go_duration(&input);
    }

    #[test]
    fn duration_shaped_text_is_parsed_or_refused_without_panic(
        input in "[+-]?([0-9]{0,25}(\\.[0-9]{0,25})?(ns|us|µs|ms|s|m|h|d|)){1,5}"
    ) {
        if let Ok(parsed) = parse_go_duration(&input) {
            prop_assert!(parsed <= MAX_GO_DURATION);
        }
    }

    #[test]
    fn formatting_then_parsing_gives_the_same_duration(nanos in 0..=i64::MAX as u64) {
        let duration = Duration::from_nanos(nanos);
        let text = format_go_duration(duration);
        prop_assert_eq!(parse_go_duration(&text), Ok(duration), "{}", text);
    }

    #[test]
    fn whole_units_add_up(hours in 0u64..10_000, minutes in 0u64..10_000, seconds in 0u64..10_000) {
        let text = format!("{hours}h{minutes}m{seconds}s");
        let expected = Duration::from_secs(hours * 3600 + minutes * 60 + seconds);
        prop_assert_eq!(parse_go_duration(&text), Ok(expected));
    }

    #[test]
    fn negative_values_are_always_refused(input in "-[0-9]{1,5}(h|m|s)") {
        prop_assert!(parse_go_duration(&input).is_err());
    }
}
