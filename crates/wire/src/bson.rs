//! How Newtonsoft.Json.Bson writes .NET values, for the few types BSON lacks.

use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{Binary, Bson};
use uuid::Uuid;

/// A .NET `Guid` as BSON: binary subtype 4 in `Guid.ToByteArray()` order, whose
/// first three groups are little-endian.
pub fn guid(id: Uuid) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.to_bytes_le().to_vec(),
    })
}

/// Reads a .NET `Guid` written by [`guid`].
pub fn guid_from(value: &Bson) -> Option<Uuid> {
    match value {
        Bson::Binary(Binary { bytes, .. }) if bytes.len() == 16 => {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(bytes);
            Some(Uuid::from_bytes_le(raw))
        }
        _ => None,
    }
}

/// A .NET `TimeSpan` in the `c` format: `[d.]hh:mm:ss[.fffffff]`.
pub fn timespan(duration: Duration) -> String {
    let total = duration.as_secs();
    let (days, hours, minutes, seconds) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    let ticks = duration.subsec_nanos() / 100;
    let mut text = String::new();
    if days > 0 {
        text.push_str(&format!("{days}."));
    }
    text.push_str(&format!("{hours:02}:{minutes:02}:{seconds:02}"));
    if ticks > 0 {
        text.push_str(&format!(".{ticks:07}"));
    }
    text
}

/// Parses a .NET `TimeSpan` in the `c` format; `None` if malformed or negative.
pub fn timespan_from(text: &str) -> Option<Duration> {
    let (clock, fraction) = match text.split_once('.') {
        // A '.' before the first ':' separates days.
        Some((days, rest)) if !days.contains(':') => {
            let days: u64 = days.parse().ok()?;
            let (clock, fraction) = split_fraction(rest)?;
            let whole_days = Duration::from_secs(days.checked_mul(86_400)?);
            return whole_days
                .checked_add(parse_clock(clock)?)?
                .checked_add(fraction);
        }
        _ => split_fraction(text)?,
    };
    Some(parse_clock(clock)? + fraction)
}

fn split_fraction(text: &str) -> Option<(&str, Duration)> {
    match text.split_once('.') {
        None => Some((text, Duration::ZERO)),
        Some((clock, digits)) if !digits.is_empty() && digits.len() <= 7 => {
            let ticks: u32 = format!("{digits:0<7}").parse().ok()?;
            Some((clock, Duration::from_nanos(u64::from(ticks) * 100)))
        }
        Some(_) => None,
    }
}

fn parse_clock(clock: &str) -> Option<Duration> {
    let mut parts = clock.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    (parts.next().is_none() && h < 24 && m < 60 && s < 60)
        .then(|| Duration::from_secs(h * 3600 + m * 60 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_uses_dotnet_byte_order() {
        let id: Uuid = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let Bson::Binary(binary) = guid(id) else {
            panic!()
        };
        assert_eq!(
            binary.bytes,
            [
                0x5b, 0xad, 0x8f, 0x0f, 0xcb, 0xd9, 0x9f, 0x46, 0xa1, 0x65, 0x70, 0x86, 0x77, 0x28,
                0x95, 0x0e
            ]
        );
        assert_eq!(guid_from(&Bson::Binary(binary)), Some(id));
    }

    #[test]
    fn timespans_in_c_format() {
        for (duration, text) in [
            (Duration::from_secs(120), "00:02:00"),
            (Duration::from_secs(1), "00:00:01"),
            (Duration::from_secs(86_400 + 3661), "1.01:01:01"),
            (Duration::from_millis(1500), "00:00:01.5000000"),
        ] {
            assert_eq!(timespan(duration), text);
            assert_eq!(timespan_from(text), Some(duration), "{text}");
        }
        assert_eq!(timespan_from("00:60:00"), None);
        assert_eq!(timespan_from("nonsense"), None);
        assert_eq!(
            timespan_from("213503982334601.23:59:59"),
            None,
            "overflow is malformed, not a panic"
        );
    }
}
