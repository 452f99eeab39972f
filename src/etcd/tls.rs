//! TLS material: the CA that verifies etcd and the optional client certificate and key, read from PEM
//! files into a ureq TLS configuration backed by rustls with the ring provider. No system roots are
//! used (scratch images have none); every failure names the file and what was wrong with it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

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
