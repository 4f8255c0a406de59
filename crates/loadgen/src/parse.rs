//! Flag value parsers shared by the load generator and the collector.

use std::time::Duration;

use crate::error::{LoadgenError, Result};

/// Parse a Go-style duration ("1s", "500ms", "2m", "1m30s", "1.5s", "0"), so upstream's
/// command lines work unchanged. Units: ns, us (µs), ms, s, m, h. A bare "0" is zero.
pub fn parse_duration(input: &str) -> Result<Duration> {
    let bad = |reason| LoadgenError::BadDuration {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(bad("missing unit (use ns, us, ms, s, m or h)"))?;
        if num_len == 0 {
            return Err(bad("expected a number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad("bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad("unknown unit (use ns, us, ms, s, m or h)")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad("too large"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Reduce upstream's `--server` forms (`http://host:port`, `ws://host:port/ws`, `host:port`)
/// to the `host:port` we connect to. Without a port, http/ws mean 80 and https/wss 443.
pub fn server_host_port(input: &str) -> Result<String> {
    let bad = |reason| LoadgenError::BadServer {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let (default_port, rest) = match s.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" | "tcp" => (Some(80), rest),
            "https" | "wss" => (Some(443), rest),
            _ => return Err(bad("unknown scheme (use http, ws or none)")),
        },
        None => (None, s),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Drop userinfo if someone passed user@host.
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let has_port = if let Some(end) = authority.rfind(']') {
        authority[end..].contains(':')
    } else {
        authority.contains(':')
    };
    if has_port {
        let (host, port) = authority.rsplit_once(':').ok_or(bad("no port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        port.parse::<u16>().map_err(|_| bad("bad port"))?;
        Ok(authority.to_string())
    } else {
        match default_port {
            Some(p) => Ok(format!("{authority}:{p}")),
            None => Err(bad("no port (use host:port)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "1", "s", "1x", "1..2s", "-1s", "1e999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn server_forms_reduce_to_host_port() {
        assert_eq!(
            server_host_port("http://localhost:8080").unwrap(),
            "localhost:8080"
        );
        assert_eq!(
            server_host_port("ws://192.168.12.2:8080/ws").unwrap(),
            "192.168.12.2:8080"
        );
        assert_eq!(server_host_port("10.0.0.1:9").unwrap(), "10.0.0.1:9");
        assert_eq!(server_host_port("http://h").unwrap(), "h:80");
        assert_eq!(server_host_port("[::1]:8080").unwrap(), "[::1]:8080");
        assert_eq!(server_host_port("http://[::1]/x").unwrap(), "[::1]:80");
        for bad in ["", "host", "ftp://h:1", "h:99999", ":80", "http:///ws"] {
            assert!(server_host_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}
