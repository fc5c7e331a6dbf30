//! Durations in specs: an integer followed by a unit, e.g. `250ms`, `10s`, `5m`, `1h`,
//! or a sum of them such as `1m30s`.

use std::time::Duration;

/// Parses `250ms`, `10s`, `5m`, `1h`, `1m30s`. Returns a message naming what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration: write a number and a unit, e.g. 500ms, 10s, 5m".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "malformed duration `{text}`: expected a number at `{rest}` (e.g. 500ms, 10s, 5m, 1h)"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("malformed duration `{text}`: number too large"))?;
        let unit_len = after.chars().take_while(char::is_ascii_alphabetic).count();
        let (unit, tail) = after.split_at(unit_len);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "malformed duration `{text}`: missing unit after {value} (use ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "malformed duration `{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                ));
            }
        };
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("malformed duration `{text}`: too large"))?;
        rest = tail;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way specs write it.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) && ms > 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn rejects_malformed_with_a_reason() {
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("ten seconds")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            parse_duration("5sec")
                .unwrap_err()
                .contains("unknown unit `sec`")
        );
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "10s", "5m", "1h"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
    }
}
