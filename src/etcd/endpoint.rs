//! Endpoint addresses: `http://host:port`, `https://host:port` or bare `host:port` (IPv6 literals in
//! brackets), normalised to a base URL.

use std::net::Ipv6Addr;

/// The port etcd listens on for clients when an endpoint names none.
pub const DEFAULT_PORT: u16 = 2379;

/// One etcd member's client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether to speak HTTPS.
    pub tls: bool,
    /// Host name or IP literal; IPv6 literals keep their brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses one endpoint. A bare `host:port` speaks HTTPS when `tls_by_default` (a CA is
    /// configured), else HTTP — as etcd's own client does.
    pub fn parse(text: &str, tls_by_default: bool) -> Result<Endpoint, String> {
        let text = text.trim();
        let (tls, rest) = match text.split_once("://") {
            // Schemes are case-insensitive (RFC 3986 section 3.1).
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "unsupported scheme {scheme:?}: expected http://, https:// or host:port"
                ))
            }
            None => (tls_by_default, text),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(bad) = authority
            .chars()
            .find(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace())
        {
            return Err(format!(
                "unexpected {bad:?}: expected only host and port, no path, query or user"
            ));
        }
        let (host, port) = split_host_port(authority)?;
        Ok(Endpoint { tls, host, port })
    }

    /// The base URL requests are made against, e.g. `https://[::1]:2379`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (literal, after) = inner
            .split_once(']')
            .ok_or("unclosed '[' in IPv6 literal")?;
        literal
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{literal:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected ':' after ']'")?),
        };
        (format!("[{literal}]"), port)
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("IPv6 literals must be in brackets, e.g. [::1]:2379".into());
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!("{host:?} is not a valid host name"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(text) => parse_port(text)?,
    };
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("port {text} is out of range 1-65535"))
        }
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port {text:?} is not a number 1-65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, tls_default: bool) -> String {
        Endpoint::parse(text, tls_default)
            .map(|e| e.url())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(ok("http://127.0.0.1:2379", true), "http://127.0.0.1:2379");
        assert_eq!(
            ok("https://etcd-0.etcd:2379/", false),
            "https://etcd-0.etcd:2379"
        );
        assert_eq!(ok("10.0.0.1:32379", false), "http://10.0.0.1:32379");
        assert_eq!(ok("10.0.0.1:32379", true), "https://10.0.0.1:32379");
        assert_eq!(ok("[::1]:2379", false), "http://[::1]:2379");
        assert_eq!(ok("https://[fe80::1]", false), "https://[fe80::1]:2379");
        assert_eq!(ok(" etcd ", false), "http://etcd:2379");
        assert_eq!(ok("HTTPS://etcd:1", false), "https://etcd:1");
        assert_eq!(ok("Http://etcd:1", true), "http://etcd:1");
    }

    #[test]
    fn rejects_bad_forms_with_a_reason() {
        for (text, needle) in [
            ("ftp://x:1", "scheme"),
            ("http://x:0", "out of range"),
            ("http://x:99999", "out of range"),
            ("http://x:abc", "not a number"),
            ("http://x:-1", "not a number"),
            ("http://x:", "not a number"),
            ("::1:2379", "brackets"),
            ("[::1", "unclosed"),
            ("[zz]:1", "IPv6"),
            ("http://:2379", "missing host"),
            ("http://x:1/v3", "path"),
            ("http://u@x:1", "user"),
            ("ho st:1", "no path"),
            ("h$st:1", "host name"),
            ("", "missing host"),
        ] {
            let err = Endpoint::parse(text, false).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
