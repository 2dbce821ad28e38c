//! Sizes and durations as people read and write them.

/// A size as people read it, in the reference's style: `1 byte`, `512 bytes`, `1.0 KB`,
/// `1.0 MB` (1024-based, one decimal).
///
/// ```
/// use private_storage::human_size;
/// assert_eq!(human_size(1_048_576), "1.0 MB");
/// assert_eq!(human_size(1536), "1.5 KB");
/// ```
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes == 1 {
        return "1 byte".to_owned();
    }
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration as operators write it: seconds (`90`, `90s`), minutes (`10m`), hours (`12h`) or
/// days (`7d`). `None` for anything else, or on overflow. The syntax of every duration setting
/// (the S3 `presign_expiry`, and the server's).
///
/// ```
/// use std::time::Duration;
/// use private_storage::parse_duration;
/// assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
/// assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
/// assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
/// assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => return Some(std::time::Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_reference() {
        for (bytes, text) in [
            (0, "0 bytes"),
            (1, "1 byte"),
            (1023, "1023 bytes"),
            (1024, "1.0 KB"),
            (1_048_576, "1.0 MB"),
            (10 * 1_048_576, "10.0 MB"),
            (1_073_741_824, "1.0 GB"),
            (1_610_612_736, "1.5 GB"),
        ] {
            assert_eq!(human_size(bytes), text, "{bytes}");
        }
    }
}
