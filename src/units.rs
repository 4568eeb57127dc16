//! Byte counts for people: printing (`1.5 GiB`), parsing (`--memory-budget 2G`), and the memory
//! this process can still allocate.

/// Memory this process can still allocate, in bytes: the least of the machine's available memory
/// (`MemAvailable`), the cgroup's remaining limit and the address-space limit (`ulimit -v`) less
/// what is mapped already. `None` where none of these can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mem_available = meminfo
        .as_deref()
        .and_then(|text| kib_field(text, "MemAvailable:"));
    let cgroup = (|| {
        let max = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
        let max: u64 = max.trim().parse().ok()?; // "max" means no limit
        let current: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(max.saturating_sub(current))
    })();
    let address_space = (|| {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max address space"))?;
        let soft: u64 = line
            .trim_start_matches("Max address space")
            .split_whitespace()
            .next()?
            .parse()
            .ok()?; // "unlimited" does not parse
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let mapped = kib_field(&status, "VmSize:")?;
        Some(soft.saturating_sub(mapped))
    })();
    [mem_available, cgroup, address_space]
        .into_iter()
        .flatten()
        .min()
}

/// The value of a `Key:   123 kB` line, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `1536` → `1.5 KiB`, and so on up to TiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a byte count: a number with an optional unit `K`, `M`, `G`, `T` (powers of 1024; `KiB`,
/// `MB` and so on are read the same way), e.g. `512M`, `1.5G`, `2000000`. The error says what is
/// wrong (for [`crate::Error::InvalidArgument`]; this module stands below the error type).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!(
            "memory size {text:?}: expected a number with an optional unit K, M, G or T, e.g. 8G"
        )
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let scale = match unit.trim_end_matches('B').trim_end_matches('I') {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_byte_counts() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("2K").unwrap(), 2048);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("3mb").unwrap(), 3 << 20);
        for bad in ["", "x", "5Q", "-1", "0"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn available_memory_is_plausible_on_linux() {
        if cfg!(target_os = "linux") {
            let a = available_memory().expect("readable on Linux");
            assert!(a > 1 << 20, "{a}");
        }
    }
}
