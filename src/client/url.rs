//! `ws://` and `wss://` URLs: just what a WebSocket client needs (RFC 6455 §3), no general URL
//! parsing.

use core::fmt;

/// A parsed `ws://host[:port][/path][?query]` or `wss://…` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: the connection runs over TLS.
    pub tls: bool,
    /// The host as written: a name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// The port: as written, or 80 (443 for `wss://`).
    pub port: u16,
    /// The request target: path and query, starting with `/`.
    pub target: String,
    /// The `Host` header: host (bracketed if IPv6), and `:port` unless it is the scheme's
    /// default.
    pub host_header: String,
}

/// Why a URL cannot be connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// `wss://` in a build without the `tls` feature.
    TlsNotSupported,
    /// A scheme other than `ws` or `wss` (RFC 6455 §3), or none.
    UnsupportedScheme(String),
    /// No host, a bad port, a fragment (RFC 6455 §3 forbids one), user information, or
    /// characters that cannot go into a request line.
    Malformed(&'static str),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TlsNotSupported => f.write_str("wss:// needs bidir built with the tls feature"),
            Self::UnsupportedScheme(s) => write!(f, "unsupported URL scheme {s:?}: use ws://"),
            Self::Malformed(why) => write!(f, "malformed WebSocket URL: {why}"),
        }
    }
}

impl std::error::Error for UrlError {}

impl WsUrl {
    /// Parses `url`. The scheme is case-insensitive; the path defaults to `/`.
    ///
    /// # Errors
    ///
    /// [`UrlError`]; without the `tls` feature, `wss://` is recognised and refused with
    /// [`UrlError::TlsNotSupported`].
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) =
            url.split_once("://").ok_or(UrlError::Malformed("no scheme (ws://...)"))?;
        let tls = scheme.eq_ignore_ascii_case("wss");
        if tls && cfg!(not(feature = "tls")) {
            return Err(UrlError::TlsNotSupported);
        }
        if !tls && !scheme.eq_ignore_ascii_case("ws") {
            return Err(UrlError::UnsupportedScheme(scheme.to_owned()));
        }
        let default_port = if tls { 443 } else { 80 };
        if rest.contains('#') {
            return Err(UrlError::Malformed("a fragment is not allowed"));
        }
        if !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UrlError::Malformed("spaces or non-ASCII characters"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        if authority.contains('@') {
            return Err(UrlError::Malformed("user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::Malformed("unclosed ["))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::Malformed("bad IPv6 address"));
            }
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or(UrlError::Malformed("after ]"))?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::Malformed("no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| UrlError::Malformed("bad port"))?
            }
            Some(_) => return Err(UrlError::Malformed("bad port")),
        };
        let bracketed =
            if host.contains(':') { format!("[{host}]") } else { host.to_ascii_lowercase() };
        let host_header =
            if port == default_port { bracketed } else { format!("{bracketed}:{port}") };
        Ok(Self { tls, host: host.to_owned(), port, target, host_header })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_rfc_6455_allows() {
        let u = WsUrl::parse("ws://example.com/chat?room=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("example.com", 80, "/chat?room=1")
        );
        assert_eq!(u.host_header, "example.com");
        let u = WsUrl::parse("WS://Example.COM:9001").unwrap();
        assert_eq!(
            (u.port, u.target.as_str(), u.host_header.as_str()),
            (9001, "/", "example.com:9001")
        );
        let u = WsUrl::parse("ws://127.0.0.1:8080?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.target.as_str()), ("127.0.0.1", "/?x=1"));
        let u = WsUrl::parse("ws://[::1]:9001/echo").unwrap();
        assert_eq!((u.host.as_str(), u.host_header.as_str()), ("::1", "[::1]:9001"));
        let u = WsUrl::parse("ws://[::1]/").unwrap();
        assert_eq!((u.port, u.host_header.as_str()), (80, "[::1]"));
        assert!(!u.tls);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn wss_defaults_to_port_443() {
        let u = WsUrl::parse("WSS://Example.com/chat").unwrap();
        assert!(u.tls);
        assert_eq!((u.port, u.host_header.as_str()), (443, "example.com"));
        let u = WsUrl::parse("wss://example.com:80/").unwrap();
        assert_eq!((u.port, u.host_header.as_str()), (80, "example.com:80"));
        let u = WsUrl::parse("wss://127.0.0.1:9443").unwrap();
        assert_eq!((u.port, u.host_header.as_str()), (9443, "127.0.0.1:9443"));
    }

    #[test]
    fn refuses_what_it_cannot_connect_to() {
        assert_eq!(
            WsUrl::parse("http://example.com/"),
            Err(UrlError::UnsupportedScheme("http".into()))
        );
        for bad in [
            "example.com",
            "ws://",
            "ws:///path",
            "ws://host:/x",
            "ws://host:99999/",
            "ws://host:12a/",
            "ws://host/#frag",
            "ws://user@host/",
            "ws://host/a b",
            "ws://[::1/",
            "ws://[zz]/",
            "ws://[::1]x/",
        ] {
            assert!(matches!(WsUrl::parse(bad), Err(UrlError::Malformed(_))), "{bad}");
        }
    }
}
