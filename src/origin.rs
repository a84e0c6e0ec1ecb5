//! The Origin policy: which web pages may open a WebSocket to a route (RFC 6455 §10.2).
//!
//! A browser attaches the user's cookies to a WebSocket handshake whatever page opens it, and
//! the same-origin policy does not apply to WebSockets: without a check, a page on any site can
//! talk to the server as the user (cross-site WebSocket hijacking). What the browser does send
//! is `Origin`, which a page cannot change. The default, as Gorilla WebSocket and Phoenix do,
//! accepts a request that carries `Origin` only when the origin's host and port are the ones
//! the request was sent to; a request without `Origin` passes, because it does not come from
//! a browser page (and a non-browser client could send any header anyway).

use std::fmt;
use std::net::Ipv6Addr;

/// Which `Origin`s may open a WebSocket: server-wide in
/// [`ServerConfig::origins`](crate::ServerConfig::origins), per route with
/// [`ServerBuilder::origins`](crate::ServerBuilder::origins) and its siblings. The worker checks
/// it after the request is validated and before the accept hook runs; a refused request gets
/// 403 with the reason ([`OriginRefused`]) as a text body.
///
/// - A request without `Origin` passes under every policy: it is not from a browser page.
/// - [`OriginPolicy::same_host`] (the default) accepts an origin whose host and port are the
///   request's host (the `Host` header, or an absolute-form target's authority): hosts compare
///   ASCII case-insensitively (IPv6 literals as addresses), a missing port is the scheme's
///   default (80 for `http`/`ws`, 443 for `https`/`wss`), so `Origin: http://a.com:8080` matches
///   `Host: a.com:8080` and `Origin: https://a.com` matches `Host: a.com`. The scheme is not
///   compared: a TLS terminator in front hides it.
/// - [`OriginPolicy::allow`] adds an exact origin (`https://app.example.com`) or a pattern of
///   subdomains (`https://*.example.com`, which does not match `example.com` itself); scheme
///   and port must match.
/// - `Origin: null` (sandboxed iframes, `file:` pages, some redirects) is refused unless
///   [`OriginPolicy::allow_null`]: any page can produce it, so allowing it is allowing every
///   page.
/// - [`OriginPolicy::any`] checks nothing: for public services meant for pages anywhere.
///
/// ```
/// use bidir::OriginPolicy;
///
/// // The app's own host, plus its other front ends.
/// let policy = OriginPolicy::same_host()
///     .allow("https://app.example.com")
///     .allow("https://*.example.net:8443");
/// // Only the listed origins, not even the server's own host.
/// let strict = OriginPolicy::listed().allow("https://admin.example.com");
/// # let _ = (policy, strict);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPolicy {
    base: Base,
    allowed: Vec<Pattern>,
    null: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    SameHost,
    Listed,
    Any,
}

impl Default for OriginPolicy {
    /// [`OriginPolicy::same_host`].
    fn default() -> Self {
        Self::same_host()
    }
}

impl OriginPolicy {
    /// Origins whose host and port are the request's host, and those added with
    /// [`OriginPolicy::allow`]. The default.
    pub fn same_host() -> Self {
        Self { base: Base::SameHost, allowed: Vec::new(), null: false }
    }

    /// Only origins added with [`OriginPolicy::allow`] (and `null` with
    /// [`OriginPolicy::allow_null`]); a page on the server's own host is refused unless listed.
    pub fn listed() -> Self {
        Self { base: Base::Listed, allowed: Vec::new(), null: false }
    }

    /// Every origin, `null` and malformed ones included: no check at all. For a public service
    /// used by pages on any site; never for a route that relies on cookies.
    pub fn any() -> Self {
        Self { base: Base::Any, allowed: Vec::new(), null: true }
    }

    /// Also allows `origin`: `scheme://host[:port]` exactly, or `scheme://*.domain[:port]` for
    /// every subdomain of `domain` (not `domain` itself).
    ///
    /// # Panics
    ///
    /// If `origin` is neither (see [`OriginPolicy::try_allow`]): configuration is code, and a
    /// typo in it should stop the program at start.
    #[must_use]
    pub fn allow(self, origin: &str) -> Self {
        self.try_allow(origin).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`OriginPolicy::allow`], for origins read from a configuration file.
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] if `origin` is not `scheme://host[:port]` with an optional leading
    /// `*.` label in the host, or is `null` (use [`OriginPolicy::allow_null`]).
    pub fn try_allow(mut self, origin: &str) -> Result<Self, InvalidOrigin> {
        let invalid = || InvalidOrigin(origin.to_owned());
        let parsed = Origin::parse(origin).ok_or_else(invalid)?;
        let host = match parsed.host.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                HostPattern::Subdomains(format!(".{}", normalize(domain)))
            }
            Some(_) => return Err(invalid()),
            None if parsed.host.contains('*') => return Err(invalid()),
            None => HostPattern::Exact(parsed.host.to_owned()),
        };
        self.allowed.push(Pattern {
            scheme: parsed.scheme.to_ascii_lowercase(),
            host,
            port: parsed.effective_port(),
        });
        Ok(self)
    }

    /// Also allows `Origin: null`. Any page can send it (a sandboxed iframe is enough), so this
    /// allows every page: only for routes that need no protection from other sites.
    #[must_use]
    pub fn allow_null(mut self) -> Self {
        self.null = true;
        self
    }

    /// The check behind [`OriginPolicy::check`] (which lives beside
    /// [`Request`](crate::Request), in route.rs, so that this module needs no other): the
    /// request's `Origin` headers and the host it was sent to.
    pub(crate) fn check_origin<'a>(
        &self,
        mut origins: impl Iterator<Item = &'a [u8]>,
        host: Option<&str>,
    ) -> Result<(), OriginRefused> {
        if self.base == Base::Any {
            return Ok(());
        }
        let Some(origin) = origins.next() else { return Ok(()) };
        if origins.next().is_some() {
            return Err(OriginRefused::Several);
        }
        let origin = std::str::from_utf8(origin).map_err(|_| OriginRefused::Malformed)?.trim();
        if origin == "null" {
            return if self.null { Ok(()) } else { Err(OriginRefused::Null) };
        }
        let origin = Origin::parse(origin).ok_or(OriginRefused::Malformed)?;
        let same_host = self.base == Base::SameHost && host.is_some_and(|h| origin.is_on(h));
        if same_host || self.allowed.iter().any(|p| p.matches(&origin)) {
            Ok(())
        } else {
            Err(OriginRefused::NotAllowed)
        }
    }
}

/// Why [`OriginPolicy::check`] refused a request; the text is the 403's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginRefused {
    /// More than one `Origin` header: no browser sends that.
    Several,
    /// `Origin` is not `scheme://host[:port]` in UTF-8.
    Malformed,
    /// `Origin: null` without [`OriginPolicy::allow_null`].
    Null,
    /// The origin is neither the request's host (where that counts) nor allowed.
    NotAllowed,
}

impl fmt::Display for OriginRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Several => "several Origin headers",
            Self::Malformed => "malformed Origin",
            Self::Null => "Origin null is not allowed here",
            Self::NotAllowed => "Origin not allowed here",
        })
    }
}

impl std::error::Error for OriginRefused {}

/// An origin or origin pattern that [`OriginPolicy::try_allow`] cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidOrigin(pub String);

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid origin {:?}: expected scheme://host[:port] or scheme://*.domain", self.0)
    }
}

impl std::error::Error for InvalidOrigin {}

/// An allowed origin, scheme lowercased, port made explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `.example.com`, lowercased, for `*.example.com`.
    Subdomains(String),
}

impl Pattern {
    fn matches(&self, origin: &Origin<'_>) -> bool {
        let host = match &self.host {
            HostPattern::Exact(host) => same_hosts(host, origin.host),
            HostPattern::Subdomains(suffix) => {
                let host = normalize(origin.host);
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        };
        host && origin.scheme.eq_ignore_ascii_case(&self.scheme)
            && origin.effective_port() == self.port
    }
}

/// A serialized origin (RFC 6454 §6.2): `scheme://host[:port]`, nothing after.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let mut chars = scheme.bytes();
        let scheme_ok = chars.next().is_some_and(|b| b.is_ascii_alphabetic())
            && chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok || rest.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        Some(Self { scheme, host, port })
    }

    /// The port, or the scheme's default.
    fn effective_port(&self) -> Option<u16> {
        self.port.or_else(|| default_port(self.scheme))
    }

    /// Whether this origin is the host `host` (a `Host` value) on the same port.
    fn is_on(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(host) else { return false };
        let port_ok = match port {
            Some(port) => self.effective_port() == Some(port),
            // No port: the default one of whatever scheme the request came in on.
            None => self.port.is_none() || self.port == default_port(self.scheme),
        };
        port_ok && same_hosts(self.host, name)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` or `[v6]:port` into host and port; `None` if malformed.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')? + 1;
        s[1..end - 1].parse::<Ipv6Addr>().ok()?;
        match &s[end..] {
            "" => (&s[..end], None),
            rest => (&s[..end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Host names compare ASCII case-insensitively without a trailing dot; IPv6 literals as
/// addresses (`[::1]` is `[0:0::1]`).
fn same_hosts(a: &str, b: &str) -> bool {
    let v6 = |h: &str| h.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok();
    match (v6(a), v6(b)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => normalize(a) == normalize(b),
        _ => false,
    }
}

fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &OriginPolicy, origins: &[&str], host: &str) -> Result<(), OriginRefused> {
        policy.check_origin(origins.iter().map(|o| o.as_bytes()), Some(host))
    }

    #[test]
    fn same_host_compares_host_and_effective_port() {
        let p = OriginPolicy::default();
        let ok = [
            ("http://a.com:8080", "a.com:8080"),
            ("http://A.com:8080", "a.COM:8080"),
            ("https://a.com", "a.com"),
            ("https://a.com", "a.com:443"),
            ("http://a.com", "a.com:80"),
            ("wss://a.com:443", "a.com"),
            ("http://a.com.", "a.com"),
            ("http://[::1]:9001", "[0:0::1]:9001"),
            ("http://[::1]", "[::1]"),
            ("http://127.0.0.1:9001", "127.0.0.1:9001"),
        ];
        for (origin, host) in ok {
            assert_eq!(check(&p, &[origin], host), Ok(()), "{origin} on {host}");
        }
        let refused = [
            ("http://evil.com", "a.com"),
            ("http://a.com", "a.com:8080"),
            ("http://a.com:8080", "a.com"),
            ("https://a.com", "a.com:80"),
            ("http://a.com:8080", "a.com:9090"),
            ("http://a.com.evil.com", "a.com"),
            ("http://[::2]:80", "[::1]:80"),
            ("http://[::1]", "::1"),
        ];
        for (origin, host) in refused {
            assert_eq!(check(&p, &[origin], host), Err(OriginRefused::NotAllowed), "{origin}");
        }
    }

    #[test]
    fn no_origin_passes_and_bad_origins_are_refused() {
        let p = OriginPolicy::same_host();
        assert_eq!(check(&p, &[], "a.com"), Ok(()));
        assert_eq!(check(&p, &["null"], "a.com"), Err(OriginRefused::Null));
        assert_eq!(check(&p.clone().allow_null(), &["null"], "a.com"), Ok(()));
        assert_eq!(
            check(&p, &["http://a.com", "http://a.com"], "a.com"),
            Err(OriginRefused::Several)
        );
        for bad in
            ["a.com", "http://", "http://a.com/", "http://u@a.com", "http://a.com:x", "1x://a"]
        {
            assert_eq!(check(&p, &[bad], "a.com"), Err(OriginRefused::Malformed), "{bad}");
        }
        assert_eq!(
            p.check_origin([&b"http://\xff"[..]].into_iter(), Some("a")),
            Err(OriginRefused::Malformed)
        );
        // No Host to compare with: only listed origins pass.
        assert_eq!(
            p.check_origin([&b"http://a.com"[..]].into_iter(), None),
            Err(OriginRefused::NotAllowed)
        );
    }

    #[test]
    fn listed_origins_and_patterns() {
        let p = OriginPolicy::listed()
            .allow("https://app.example.com")
            .allow("https://*.example.net:8443")
            .allow("http://[::1]:3000");
        let ok = [
            "https://app.example.com",
            "HTTPS://APP.example.com:443",
            "https://a.example.net:8443",
            "https://a.b.example.net:8443",
            "http://[0::1]:3000",
        ];
        for origin in ok {
            assert_eq!(check(&p, &[origin], "elsewhere"), Ok(()), "{origin}");
        }
        let refused = [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://example.net:8443",
            "https://a.example.net",
            "https://aexample.net:8443",
            "https://evil.com",
        ];
        for origin in refused {
            assert_eq!(
                check(&p, &[origin], "evil.com"),
                Err(OriginRefused::NotAllowed),
                "{origin}"
            );
        }
        // `listed` does not add the same host.
        assert_eq!(check(&p, &["http://a.com"], "a.com"), Err(OriginRefused::NotAllowed));
    }

    #[test]
    fn any_checks_nothing() {
        let p = OriginPolicy::any();
        for origins in [&["http://evil.com"][..], &["null"], &["garbage"], &["a", "b"]] {
            assert_eq!(check(&p, origins, "a.com"), Ok(()));
        }
    }

    #[test]
    fn invalid_patterns_are_errors() {
        for bad in
            ["null", "*", "example.com", "https://*", "https://*.", "https://a.*.com", "https://x/"]
        {
            assert_eq!(
                OriginPolicy::same_host().try_allow(bad).unwrap_err(),
                InvalidOrigin(bad.to_owned())
            );
        }
    }
}
