//! TLS material: the CA that verifies etcd and the optional client certificate and key, read from PEM
//! files into a ureq TLS configuration backed by rustls with the ring provider. No system roots are
//! used (scratch images have none); every failure names the file and what was wrong with it.
//! Also what a failed TLS connection says about the settings ([`diagnose`]); the TLS step of the
//! connector chain ([`HandshakeConnector`]) marks the failures of the handshake itself, because a
//! connection that closes before the handshake is done (the endpoint spoke no TLS) and one that
//! closes right after it (etcd refused our client certificate) fail with the same I/O errors.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::unversioned::transport::{ConnectionDetails, Connector, RustlsConnector, Transport};

use super::Error;

/// The largest PEM file accepted: far above any CA bundle or key, small enough that a wrong path
/// (`/dev/zero`, a log) is refused instead of read into memory.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A file path together with the name a user knows it by (e.g. the environment variable that set it),
/// so that errors point at what the user has to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPath {
    pub name: String,
    pub path: PathBuf,
}

impl NamedPath {
    /// A path known to the user by `name`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> NamedPath {
        NamedPath {
            name: name.into(),
            path: path.into(),
        }
    }

    fn error(&self, problem: impl Into<String>) -> Error {
        Error::Setup {
            item: format!("{}={}", self.name, self.path.display()),
            problem: problem.into(),
        }
    }

    fn read(&self) -> Result<Vec<u8>, Error> {
        crate::files::read_small_file(&self.path, MAX_PEM_BYTES).map_err(|e| self.error(e))
    }
}

/// The TLS files: a CA bundle, and for mutual TLS a client certificate chain and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: NamedPath,
    pub client: Option<(NamedPath, NamedPath)>,
}

/// The crypto provider the whole client uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the files, and builds the TLS configuration for the HTTP agents.
pub fn load(files: &TlsFiles) -> Result<TlsConfig, Error> {
    let provider = provider();
    let roots = load_roots(&files.ca)?;
    let client_cert = match &files.client {
        Some((cert, key)) => Some(load_client_cert(cert, key, &provider)?),
        None => None,
    };
    Ok(TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(provider)
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(client_cert)
        .build())
}

fn load_roots(ca: &NamedPath) -> Result<Vec<Certificate<'static>>, Error> {
    let certs = read_certificates(ca)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(CertificateDer::from(cert.der().to_vec()))
            .map_err(|e| ca.error(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(certs)
}

fn load_client_cert(
    cert: &NamedPath,
    key: &NamedPath,
    provider: &CryptoProvider,
) -> Result<ClientCert, Error> {
    let chain = read_certificates(cert)?;
    let (key_der, private_key) = read_private_key(key)?;
    check_key_matches(&chain, key_der, provider).map_err(|problem| key.error(problem))?;
    Ok(ClientCert::new_with_certs(&chain, private_key))
}

fn read_certificates(file: &NamedPath) -> Result<Vec<Certificate<'static>>, Error> {
    let pem = file.read()?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| file.error(format!("bad PEM: {e}")))? {
            PemItem::Certificate(cert) => certs.push(cert),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err(file.error("no PEM certificate (BEGIN CERTIFICATE) found"));
    }
    Ok(certs)
}

fn read_private_key(
    file: &NamedPath,
) -> Result<(PrivateKeyDer<'static>, PrivateKey<'static>), Error> {
    let pem = file.read()?;
    let mut keys = 0;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem) {
        let (kind, _) = section.map_err(|e| file.error(format!("bad PEM: {e}")))?;
        if matches!(
            kind,
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
        ) {
            keys += 1;
        }
    }
    if keys != 1 {
        return Err(file.error(match keys {
            0 => "no PEM private key found (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE \
                  KEY; encrypted keys are not supported)"
                .to_string(),
            n => format!("{n} private keys found, expected one"),
        }));
    }
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file.error(format!("bad private key: {e}")))?;
    let key =
        PrivateKey::from_pem(&pem).map_err(|e| file.error(format!("bad private key: {e}")))?;
    Ok((der, key))
}

fn check_key_matches(
    chain: &[Certificate<'static>],
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<(), String> {
    let certs = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    rustls::sign::CertifiedKey::from_der(certs, key, provider)
        .map(|_| ())
        .map_err(|e| format!("the key cannot be used with the client certificate: {e}"))
}

/// A TLS failure that points at a setting rather than at the network, with what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// etcd's certificate is not signed by the CA we trust.
    UntrustedServer,
    /// etcd's certificate is not valid for the endpoint's host name or address.
    WrongName,
    /// etcd's certificate has expired or is not valid yet.
    ServerCertificateDates,
    /// etcd ended the connection as soon as the handshake was done: it refused our client
    /// certificate (none given, or one signed by a CA etcd does not trust).
    ClientRefused,
    /// An `https://` endpoint answered without TLS, or closed the connection before the handshake
    /// was done: it speaks plain HTTP.
    NotTls,
    /// An `http://` endpoint reset the connection: it probably speaks TLS.
    MaybeTls,
}

impl TlsProblem {
    /// Whether the failure itself proves the setting wrong (a certificate check), rather than
    /// suggesting it (a connection closed at a telling moment, which a network fault can mimic).
    pub fn certain(self) -> bool {
        matches!(
            self,
            TlsProblem::UntrustedServer
                | TlsProblem::WrongName
                | TlsProblem::ServerCertificateDates
        )
    }

    /// What to check, naming the variables by `names`.
    pub fn hint(self, names: &TlsNames) -> String {
        match self {
            TlsProblem::UntrustedServer => format!(
                "check {}: it must hold the CA that signed etcd's server certificate",
                names.ca
            ),
            TlsProblem::WrongName => "etcd's certificate does not name the endpoint's host: use a \
                host name or address its subjectAltName lists"
                .to_string(),
            TlsProblem::ServerCertificateDates => {
                "etcd's certificate has expired or is not valid yet (check the clocks)".to_string()
            }
            TlsProblem::ClientRefused => format!(
                "etcd refused our client certificate, or wants one: set or check {} and {} (a \
                 certificate signed by the CA etcd trusts, with clientAuth usage)",
                names.cert, names.key
            ),
            TlsProblem::NotTls => {
                "the endpoint does not speak TLS: use http:// for it (or enable TLS on etcd)"
                    .to_string()
            }
            TlsProblem::MaybeTls => format!(
                "the endpoint reset the connection; if etcd serves TLS there, use https:// and set {}",
                names.ca
            ),
        }
    }
}

/// The names users know the TLS settings by, for hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsNames {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl TlsNames {
    /// The names in `files`, or generic ones.
    pub fn of(files: Option<&TlsFiles>) -> TlsNames {
        let name = |p: Option<&NamedPath>, generic: &str| {
            p.map_or_else(|| generic.to_string(), |p| p.name.clone())
        };
        TlsNames {
            ca: name(files.map(|f| &f.ca), "the CA certificate"),
            cert: name(
                files.and_then(|f| f.client.as_ref().map(|c| &c.0)),
                "the client certificate",
            ),
            key: name(
                files.and_then(|f| f.client.as_ref().map(|c| &c.1)),
                "its key",
            ),
        }
    }
}

/// What a failed call to an endpoint (over TLS when `tls`) says about the TLS settings, if
/// anything.
///
/// A connection closed without a TLS alert tells by *when* it closed, not by how (a FIN or a
/// reset is the server's kernel's choice: etcd's plain port resets when it stops reading a
/// ClientHello half-way, which depends on the hello's random bytes): before the handshake was
/// done, the endpoint spoke no TLS; after it, etcd refused our client certificate.
pub(crate) fn diagnose(tls: bool, error: &ureq::Error) -> Option<TlsProblem> {
    let (io, stage) = match error {
        ureq::Error::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<InHandshake>()) {
            Some(InHandshake(inner)) => (Some(inner), Stage::Handshake),
            None => (Some(io), Stage::Exchange),
        },
        _ => (None, Stage::Exchange),
    };
    let rustls_error = match error {
        ureq::Error::Rustls(e) => Some(e),
        _ => io.and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>()),
    };
    if let Some(e) = rustls_error {
        return diagnose_rustls(e);
    }
    let kind = io.map(std::io::Error::kind)?;
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    match (tls, kind, stage) {
        (true, BrokenPipe | ConnectionReset | UnexpectedEof, Stage::Handshake) => {
            Some(TlsProblem::NotTls)
        }
        (true, BrokenPipe | ConnectionReset | UnexpectedEof, Stage::Exchange) => {
            Some(TlsProblem::ClientRefused)
        }
        (false, ConnectionReset | UnexpectedEof, _) => Some(TlsProblem::MaybeTls),
        _ => None,
    }
}

/// When a connection failed: during the TLS handshake, or after it (or without TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Handshake,
    Exchange,
}

/// The TLS step of the connector chain: ureq's rustls connector, whose I/O failures (those of the
/// handshake, the only I/O it does) come out marked [`InHandshake`] for [`diagnose`].
#[derive(Debug, Default)]
pub(crate) struct HandshakeConnector(RustlsConnector);

impl<In: Transport> Connector<In> for HandshakeConnector {
    type Out = <RustlsConnector as Connector<In>>::Out;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        self.0.connect(details, chained).map_err(InHandshake::mark)
    }
}

/// An I/O error that ended a TLS handshake; it reads as the error it wraps, and has its kind.
#[derive(Debug)]
struct InHandshake(std::io::Error);

impl InHandshake {
    /// Marks an I/O error (timeouts and the like are ureq's own errors, left as they are).
    fn mark(error: ureq::Error) -> ureq::Error {
        match error {
            ureq::Error::Io(io) => ureq::Error::Io(std::io::Error::new(io.kind(), InHandshake(io))),
            other => other,
        }
    }
}

impl std::fmt::Display for InHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InHandshake {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn diagnose_rustls(error: &rustls::Error) -> Option<TlsProblem> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    match error {
        rustls::Error::InvalidCertificate(cert) => Some(match cert {
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => TlsProblem::WrongName,
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. } => TlsProblem::ServerCertificateDates,
            _ => TlsProblem::UntrustedServer,
        }),
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::CertificateRequired
            | Alert::UnknownCA
            | Alert::UnsupportedCertificate
            | Alert::CertificateUnknown,
        ) => Some(TlsProblem::ClientRefused),
        rustls::Error::InvalidMessage(_) => Some(TlsProblem::NotTls),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error as IoError, ErrorKind};

    fn io(kind: ErrorKind) -> ureq::Error {
        ureq::Error::Io(IoError::from(kind))
    }

    fn in_handshake(kind: ErrorKind) -> ureq::Error {
        InHandshake::mark(io(kind))
    }

    #[test]
    fn a_close_during_the_handshake_means_the_endpoint_speaks_no_tls_however_it_closed() {
        // etcd's plain port closes a ClientHello with a FIN or, when it stopped reading half-way,
        // a reset: both are the same mistake.
        for kind in [ErrorKind::UnexpectedEof, ErrorKind::ConnectionReset] {
            assert_eq!(
                diagnose(true, &in_handshake(kind)),
                Some(TlsProblem::NotTls),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_close_after_the_handshake_means_etcd_refused_our_client_certificate() {
        for kind in [
            ErrorKind::BrokenPipe,
            ErrorKind::ConnectionReset,
            ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(
                diagnose(true, &io(kind)),
                Some(TlsProblem::ClientRefused),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_marked_error_reads_as_the_original_and_keeps_what_else_it_says() {
        let marked = in_handshake(ErrorKind::ConnectionReset);
        assert_eq!(
            marked.to_string(),
            io(ErrorKind::ConnectionReset).to_string()
        );
        // A certificate check failing in the handshake is still read as one.
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let marked = InHandshake::mark(ureq::Error::Io(IoError::new(
            ErrorKind::InvalidData,
            untrusted,
        )));
        assert_eq!(diagnose(true, &marked), Some(TlsProblem::UntrustedServer));
        // Not ours to mark: a timeout stays a timeout, and is no TLS problem.
        let timeout = InHandshake::mark(ureq::Error::Timeout(ureq::Timeout::Connect));
        assert!(matches!(timeout, ureq::Error::Timeout(_)));
        assert_eq!(diagnose(true, &timeout), None);
        // Without TLS, a close still only suggests that the endpoint wants TLS.
        assert_eq!(
            diagnose(false, &io(ErrorKind::ConnectionReset)),
            Some(TlsProblem::MaybeTls)
        );
    }
}
