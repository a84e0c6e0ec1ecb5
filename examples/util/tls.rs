//! TLS for the examples that serve pages (echo, chat): their `--tls CERT KEY` and
//! `--tls-self-signed CERT-OUT` options end here. Each example includes this file with
//! `#[path = "util/tls.rs"] mod tls;` (a folder without `main.rs` is no example of its own).

use std::io;

use base64::Engine as _;
use bidir::tls::ServerTls;
use bidir::{Server, ServerBuilder};
use rcgen::PublicKeyData as _;

/// A builder listening on `addr`, over TLS when `tls` is given, and the letter that turns
/// `http`/`ws` into the scheme it serves: `"s"` over TLS, `""` plain.
pub(crate) fn bind(addr: &str, tls: Option<ServerTls>) -> (ServerBuilder, &'static str) {
    match tls {
        Some(tls) => (Server::builder().bind_tls(addr, tls), "s"),
        None => (Server::builder().bind(addr), ""),
    }
}

/// A new self-signed certificate for localhost and 127.0.0.1, written to `path` as PEM (for
/// a client to trust: `chat client --trust PATH`); prints a line ending in the base64 SHA-256
/// of its public key, which Chromium's `--ignore-certificate-errors-spki-list` takes to trust
/// that one key and nothing else (scripts/browser/check.sh reads it there). The key stays in
/// memory: each run makes another.
///
/// # Errors
///
/// `path` cannot be written.
pub(crate) fn self_signed(path: &str) -> io::Result<ServerTls> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let cert = generated.cert.pem();
    std::fs::write(path, &cert)?;
    let spki = generated.signing_key.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    let spki = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    println!("self-signed certificate in {path}; its key's SHA-256 (SPKI): {spki}");
    ServerTls::from_pem(cert.as_bytes(), generated.signing_key.serialize_pem().as_bytes())
}
