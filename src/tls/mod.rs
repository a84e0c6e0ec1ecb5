//! TLS for `wss://` and `https://`: rustls on the workers, with no runtime and no extra thread.
//!
//! A server listens with TLS on the addresses given to
//! [`ServerBuilder::bind_tls`](crate::ServerBuilder::bind_tls), next to plain ones; the
//! handshake runs on the worker that accepted the connection, inside the same handshake
//! timeout as the HTTP upgrade. Clients (`Connect`, the engine's
//! client connections and the rpc client) take `wss://` URLs and check the server's
//! certificate against [`ClientTls`]'s roots.
//!
//! The crypto is rustls's *ring* provider (docs/tls.md says why): TLS 1.3 and 1.2, AES-GCM and
//! ChaCha20-Poly1305, ECDHE (X25519, P-256, P-384) only, certificates checked by webpki.
//! Application protocol negotiation (ALPN) offers and accepts `http/1.1` only.
//!
//! Kernel TLS would take over after the handshake (hand the traffic keys to the socket, then
//! send plaintext); the kernel this was built on has no `tls` module, so it is not used: docs/tls.md
//! says where it plugs in.

mod record;
mod session;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ClientConfig, RootCertStore, ServerConfig};

pub(crate) use session::{Session, TlsError};

/// The only application protocol offered and accepted: WebSocket upgrades are HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The crypto provider every configuration here is built with: ring's, with AES-128-GCM
/// first. rustls lists AES-256-GCM (with SHA-384) first; AES-128 takes 10 rounds to its 14,
/// and SHA-256 runs on the CPU's SHA instructions where SHA-384 has none (docs/tls.md).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        let mut provider = rustls::crypto::ring::default_provider();
        // A stable sort: the TLS 1.2 suites keep rustls's order after these.
        provider.cipher_suites.sort_by_key(|suite| match suite.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            _ => 3,
        });
        Arc::new(provider)
    }))
}

/// A TLS listener's configuration: its certificates and keys. Cheap to clone.
///
/// ```no_run
/// use bidir::tls::ServerTls;
/// use bidir::{Context, Handler, Message, Request, Server};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&mut self, cx: &mut Context<'_>, msg: Message<'_>) {
///         let _ = cx.send(msg);
///     }
/// }
///
/// let tls = ServerTls::from_pem_files("cert.pem", "key.pem")?;
/// let server = Server::builder()
///     .bind_tls("0.0.0.0:443", tls) // wss:// and https://
///     .bind("0.0.0.0:80") // ws:// and http:// beside it
///     .route("/echo", |_req: &Request<'_>| Ok(Echo))
///     .start()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
}

impl ServerTls {
    /// One certificate chain (end entity first) and its private key, for every host.
    ///
    /// # Errors
    ///
    /// A key rustls cannot use, or one that does not match the certificate.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, rustls::Error> {
        let certified = CertifiedKey::from_der(chain, key, &provider())?;
        Ok(Self::with_resolver(Arc::new(PerHost {
            hosts: HashMap::new(),
            default: Arc::new(certified),
        })))
    }

    /// [`ServerTls::new`] from PEM text: the chain's certificates, then a PKCS#8, PKCS#1 or
    /// SEC1 private key.
    ///
    /// # Errors
    ///
    /// `InvalidData` for PEM without a certificate or a key, or a key that does not fit.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> io::Result<Self> {
        let (chain, key) = parse_pem(chain, key)?;
        Self::new(chain, key).map_err(invalid)
    }

    /// [`ServerTls::from_pem`] from files.
    ///
    /// # Errors
    ///
    /// The files' read errors, or what [`ServerTls::from_pem`] reports.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_pem(&std::fs::read(chain)?, &std::fs::read(key)?)
    }

    /// A certificate per host name (SNI), and `default` for clients that send no name (an IP
    /// address in the URL) or one not listed. Names are matched without case; a client that
    /// names a host the server has no certificate for gets `default`'s, which its check
    /// then refuses.
    ///
    /// # Errors
    ///
    /// A key rustls cannot use, or one that does not match its certificate.
    pub fn per_host(
        hosts: impl IntoIterator<Item = (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        default: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    ) -> Result<Self, rustls::Error> {
        let provider = provider();
        let mut by_name = HashMap::new();
        for (host, chain, key) in hosts {
            let certified = Arc::new(CertifiedKey::from_der(chain, key, &provider)?);
            by_name.insert(host.to_ascii_lowercase(), certified);
        }
        let default = CertifiedKey::from_der(default.0, default.1, &provider)?;
        Ok(Self::with_resolver(Arc::new(PerHost { hosts: by_name, default: Arc::new(default) })))
    }

    fn with_resolver(resolver: Arc<dyn ResolvesServerCert>) -> Self {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        // After a TLS 1.3 handshake the traffic keys go to our record layer (docs/tls.md).
        config.enable_secret_extraction = true;
        // The server's order of suites (AES-128-GCM first), not the client's.
        config.ignore_client_order = true;
        Self { config: Arc::new(config) }
    }

    /// A rustls configuration made elsewhere (client certificates, other versions, a
    /// session ticketer), used as given. Its `alpn_protocols` should be `["http/1.1"]` or
    /// empty: a browser that offers only `h2` is refused by rustls when it is set, and would
    /// speak HTTP/2 to an HTTP/1.1 parser when it is not. With `enable_secret_extraction` set,
    /// TLS 1.3 connections move to the engine's record layer after the handshake, as with the
    /// other constructors; without it rustls keeps the records (more copies, more memory per
    /// connection).
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        Self { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("alpn", &self.config.alpn_protocols).finish()
    }
}

/// Certificates by SNI name, with a default.
#[derive(Debug)]
struct PerHost {
    hosts: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for PerHost {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|name| {
            // rustls hands names over lowercased already; a map miss is the default.
            self.hosts.get(name)
        });
        Some(Arc::clone(named.unwrap_or(&self.default)))
    }
}

/// Which servers a client trusts. The default is the Mozilla root program's certificates as
/// [`webpki_roots`] compiles them in: the same on every machine, no system files read.
/// Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
}

impl ClientTls {
    /// The webpki roots (the default).
    pub fn webpki_roots() -> Self {
        static DEFAULT: OnceLock<ClientTls> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Self::with_roots(webpki_root_store()).expect("the default roots are valid")
            })
            .clone()
    }

    /// The webpki roots and `certificates` besides (a test's self-signed certificate, a
    /// private certificate authority).
    ///
    /// # Errors
    ///
    /// A certificate webpki cannot parse as a trust anchor.
    pub fn trusting(
        certificates: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, rustls::Error> {
        let mut roots = webpki_root_store();
        for certificate in certificates {
            roots.add(certificate)?;
        }
        Self::with_roots(roots)
    }

    /// [`ClientTls::trusting`] the certificates of a PEM file.
    ///
    /// # Errors
    ///
    /// The file's read error; `InvalidData` for a file without a certificate or one that is not
    /// a usable trust anchor.
    pub fn trusting_pem_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(invalid)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        if certificates.is_empty() {
            return Err(invalid("no certificate in the file"));
        }
        Self::trusting(certificates).map_err(invalid)
    }

    /// Only `roots` (no webpki roots).
    ///
    /// # Errors
    ///
    /// None today; a `Result` for provider checks.
    pub fn with_roots(roots: RootCertStore) -> Result<Self, rustls::Error> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        config.enable_secret_extraction = true;
        Ok(Self { config: Arc::new(config) })
    }

    /// A rustls configuration made elsewhere (system roots through `rustls-native-certs`,
    /// client certificates), used as given; see [`ServerTls::from_config`] on
    /// `enable_secret_extraction`.
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

impl Default for ClientTls {
    fn default() -> Self {
        Self::webpki_roots()
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("alpn", &self.config.alpn_protocols).finish()
    }
}

fn webpki_root_store() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// A certificate chain and a private key from PEM text.
fn parse_pem(
    chain: &[u8],
    key: &[u8],
) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain =
        CertificateDer::pem_slice_iter(chain).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
    if chain.is_empty() {
        return Err(invalid("no certificate in the PEM text"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(invalid)?;
    Ok((chain, key))
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
