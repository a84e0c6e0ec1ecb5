//! Header value grammar: comma-separated token lists and the `Sec-WebSocket-Extensions`
//! grammar (RFC 6455 §9.1, RFC 7230 §3.2.6), borrowed from the request buffer.

use core::fmt;

/// Splits a `1#token` list ("a, b,c") into its trimmed, non-empty elements.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// Whether a comma-separated list header value contains `token`, compared ASCII
/// case-insensitively (`Connection: keep-alive, Upgrade`).
pub fn has_token(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Trims optional whitespace (SP, HTAB) from both ends.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether `b` is a `tchar` (RFC 7230 §3.2.6).
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Whether `s` is a non-empty `token`.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Whether `s` may be sent as a header value: visible ASCII, obs-text, SP and HTAB; no CR,
/// LF or NUL, so a value can never end the header early (response splitting).
pub fn is_valid_value(s: &[u8]) -> bool {
    s.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// One offer (or answer) in a `Sec-WebSocket-Extensions` header: `name; param; param=value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionOffer<'b> {
    /// The extension's token, e.g. `permessage-deflate`.
    pub name: &'b str,
    /// The raw parameter text after the name, read with [`ExtensionOffer::params`].
    raw_params: &'b [u8],
}

impl<'b> ExtensionOffer<'b> {
    /// The parameters, in order. Duplicates are reported as they come; rejecting them is the
    /// extension's business.
    pub fn params(&self) -> Params<'b> {
        Params { rest: self.raw_params }
    }
}

/// A parameter of an extension offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param<'b> {
    /// The parameter's token.
    pub name: &'b str,
    /// The value, without surrounding quotes. A quoted value keeps its backslash escapes as
    /// written: the values RFC 7692 defines never need them, so an extension should treat a
    /// value containing `\` as invalid.
    pub value: Option<&'b str>,
}

/// The `Sec-WebSocket-Extensions` header does not follow the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidExtension;

impl fmt::Display for InvalidExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed Sec-WebSocket-Extensions header")
    }
}

impl std::error::Error for InvalidExtension {}

/// Iterator over the offers of one `Sec-WebSocket-Extensions` header value.
///
/// An element that breaks the grammar yields `Err` and the iterator moves on to the next
/// comma outside quotes, so one malformed offer does not hide the others.
#[derive(Clone, Debug)]
pub struct Extensions<'b> {
    rest: &'b [u8],
}

impl<'b> Extensions<'b> {
    /// Parses one header value.
    pub fn new(value: &'b [u8]) -> Self {
        Self { rest: value }
    }
}

impl<'b> Iterator for Extensions<'b> {
    type Item = Result<ExtensionOffer<'b>, InvalidExtension>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (element, rest) = split_outside_quotes(self.rest, b',');
            self.rest = rest;
            let element = trim(element);
            if element.is_empty() {
                continue; // `1#` lists allow empty elements
            }
            return Some(parse_offer(element));
        }
    }
}

fn parse_offer(element: &[u8]) -> Result<ExtensionOffer<'_>, InvalidExtension> {
    let (name, params) = match element.iter().position(|&b| b == b';') {
        Some(i) => (trim(&element[..i]), &element[i + 1..]),
        None => (element, &element[element.len()..]),
    };
    if !is_token(name) {
        return Err(InvalidExtension);
    }
    // Validate every parameter now, so that an offer is either wholly readable or an error.
    let mut check = Params { rest: params };
    for p in &mut check {
        p?;
    }
    let name = core::str::from_utf8(name).map_err(|_| InvalidExtension)?;
    Ok(ExtensionOffer { name, raw_params: params })
}

/// Iterator over an offer's parameters.
#[derive(Clone, Debug)]
pub struct Params<'b> {
    rest: &'b [u8],
}

impl<'b> Iterator for Params<'b> {
    type Item = Result<Param<'b>, InvalidExtension>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let (param, rest) = split_outside_quotes(self.rest, b';');
        self.rest = rest;
        Some(parse_param(trim(param)))
    }
}

fn parse_param(param: &[u8]) -> Result<Param<'_>, InvalidExtension> {
    let (name, value) = match param.iter().position(|&b| b == b'=') {
        Some(i) => (trim(&param[..i]), Some(trim(&param[i + 1..]))),
        None => (param, None),
    };
    if !is_token(name) {
        return Err(InvalidExtension);
    }
    let value = match value {
        None => None,
        Some([b'"', inner @ .., b'"']) if quoted_ok(inner) => Some(inner),
        Some(v) if is_token(v) => Some(v),
        Some(_) => return Err(InvalidExtension),
    };
    let utf8 = |s| core::str::from_utf8(s).map_err(|_| InvalidExtension);
    Ok(Param { name: utf8(name)?, value: value.map(utf8).transpose()? })
}

/// Whether the inside of a quoted string is well formed: `qdtext` or `quoted-pair`, and no
/// unescaped quote.
fn quoted_ok(inner: &[u8]) -> bool {
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' if i + 1 < inner.len() => i += 2,
            b'\\' | b'"' => return false,
            b => {
                if !(b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80) {
                    return false;
                }
                i += 1;
            }
        }
    }
    true
}

/// Splits at the first `sep` outside a quoted string; the separator is dropped.
fn split_outside_quotes(s: &[u8], sep: u8) -> (&[u8], &[u8]) {
    let mut quoted = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
        i += 1;
    }
    (s, &s[s.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    type Offer = (String, Vec<(String, Option<String>)>);

    #[test]
    fn token_lists() {
        let v: Vec<&[u8]> = tokens(b" keep-alive ,Upgrade,, x").collect();
        assert_eq!(v, [&b"keep-alive"[..], b"Upgrade", b"x"]);
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(!has_token(b"keep-alive, Upgraded", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
    }

    #[test]
    fn header_values() {
        assert!(is_valid_value(b"id=1; Path=/; HttpOnly"));
        assert!(!is_valid_value(b"a\r\nSet-Cookie: evil"));
        assert!(!is_valid_value(b"a\0"));
        assert!(is_token(b"permessage-deflate"));
        assert!(!is_token(b"bad token"));
        assert!(!is_token(b""));
    }

    fn offers(value: &str) -> Vec<Result<Offer, InvalidExtension>> {
        Extensions::new(value.as_bytes())
            .map(|o| {
                o.map(|o| {
                    let params = o
                        .params()
                        .map(|p| {
                            p.map(|p| (p.name.to_owned(), p.value.map(str::to_owned))).unwrap()
                        })
                        .collect();
                    (o.name.to_owned(), params)
                })
            })
            .collect()
    }

    /// RFC 7692 §5.1 examples and the shapes browsers send.
    #[test]
    fn extension_offers() {
        let got = offers("permessage-deflate; client_max_window_bits");
        assert_eq!(
            got,
            [Ok(("permessage-deflate".into(), vec![("client_max_window_bits".into(), None)]))]
        );
        let got = offers(
            "permessage-deflate; client_max_window_bits=10 ;server_no_context_takeover, \
             permessage-deflate; server_max_window_bits=\"12\", x-webkit-deflate-frame",
        );
        assert_eq!(got.len(), 3);
        let (name, params) = got[0].clone().unwrap();
        assert_eq!(name, "permessage-deflate");
        assert_eq!(
            params,
            [
                ("client_max_window_bits".into(), Some("10".into())),
                ("server_no_context_takeover".into(), None)
            ]
        );
        assert_eq!(
            got[1].clone().unwrap().1,
            [("server_max_window_bits".into(), Some("12".into()))]
        );
        assert_eq!(got[2].clone().unwrap(), ("x-webkit-deflate-frame".into(), vec![]));
    }

    #[test]
    fn malformed_offers_are_isolated() {
        let got = offers("foo; a=\"x, y\"; b, bad name, ; bar;=1, baz; q=\"open, qux");
        assert_eq!(
            got[0].clone().unwrap().1,
            [("a".into(), Some("x, y".into())), ("b".into(), None)]
        );
        assert_eq!(got[1], Err(InvalidExtension));
        assert_eq!(got[2], Err(InvalidExtension)); // "; bar" has an empty name
        // The rest is inside an unterminated quote: one malformed element.
        assert_eq!(got[3], Err(InvalidExtension));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn quoted_values() {
        assert!(quoted_ok(b"a\\\"b"));
        assert!(!quoted_ok(b"a\"b"));
        assert!(!quoted_ok(b"trailing\\"));
        let p = parse_param(b"x=\"a\\\"b\"").unwrap();
        assert_eq!(p.value, Some("a\\\"b"));
        assert_eq!(parse_param(b"x=a b"), Err(InvalidExtension));
        assert_eq!(parse_param(b"x="), Err(InvalidExtension));
    }
}
