//! Durations as operators write them (`30s`, `5m`, `1h30m`, `365d`), so no key ever needs a unit suffix
//! in its name or a bare number whose unit the reader must guess.

use std::time::Duration;

/// Parses `<number><unit>` runs with units `ms`, `s`, `m`, `h`, `d`; `0s` is allowed, bare numbers are not.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it as 30s, 5m, 1h or 1d");
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("expected a number followed by a unit (ms, s, m, h, d), e.g. 30s");
        }
        let (number, after) = rest.split_at(digits);
        let value: u64 = number.parse().map_err(|_| "number too large")?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let step = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.checked_mul(60).ok_or("number too large")?),
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or("number too large")?),
            "d" => Duration::from_secs(value.checked_mul(86_400).ok_or("number too large")?),
            "" => return Err("missing unit; write it as 30s, 5m, 1h or 1d"),
            _ => return Err("unknown unit; use ms, s, m, h or d"),
        };
        total = total.checked_add(step).ok_or("duration too large")?;
        rest = after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_ambiguous() {
        for bad in [
            "",
            "30",
            "s",
            "5 m",
            "1x",
            "-1s",
            "1.5s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
