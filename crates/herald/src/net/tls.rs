//! TLS settings for the `tls` and `wss` listeners: certificates loaded from PEM files, client
//! certificates (mTLS), and live rotation.
//!
//! Each handshake takes the current `rustls::ServerConfig` from an `ArcSwap`; a reload
//! (SIGHUP, or the files changing when `tls.watch_secs` is set) builds a whole new one from
//! the files and swaps it in. Connections already up keep the session state they negotiated,
//! so a rotation drops no one. A reload that fails (unreadable file, key not matching the
//! certificate, bad CA) changes nothing and says why.
//!
//! The crypto provider is chosen explicitly: ring.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{ClientAuth, TenantField, TlsConfig, UsernameFrom};

/// Why a certificate set was refused. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{key} {path}: {message}")]
pub struct TlsError {
    /// The config key naming the file.
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn error(key: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The TLS side of the listeners: the current server config, replaced whole on reload.
pub struct TlsAcceptor {
    settings: ArcSwap<TlsConfig>,
    current: ArcSwap<rustls::ServerConfig>,
    /// Modification times of the files the current config was built from.
    stamps: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("cert_file", &self.settings.load().cert_file)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Loads the certificate, key and client CA files of `settings`.
    pub fn new(settings: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
        let stamps = stamps(settings);
        let config = build(settings)?;
        Ok(TlsAcceptor {
            settings: ArcSwap::from_pointee(settings.clone()),
            current: ArcSwap::from_pointee(config),
            stamps: std::sync::Mutex::new(stamps),
        })
    }

    /// The config new handshakes use.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// How the client's username may come from its certificate.
    pub fn username_from(&self) -> UsernameFrom {
        self.settings.load().username_from
    }

    /// Where the client's tenant may come from in its certificate.
    pub fn tenant_from(&self) -> TenantField {
        self.settings.load().tenant_from
    }

    /// Seconds between checks of the files (0: none).
    pub fn watch_secs(&self) -> u64 {
        self.settings.load().watch_secs
    }

    /// Reads the files again and, if they make a valid config, uses it for new handshakes.
    /// On error the current config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_with(&self.settings.load())
    }

    /// Builds a config from `settings` (a configuration reload may change them) and, if it
    /// is valid, uses it and them for new handshakes. On error nothing changes.
    pub fn reload_with(&self, settings: &TlsConfig) -> Result<(), TlsError> {
        let stamps = stamps(settings);
        let config = build(settings)?;
        self.current.store(Arc::new(config));
        self.settings.store(Arc::new(settings.clone()));
        if let Ok(mut s) = self.stamps.lock() {
            *s = stamps;
        }
        Ok(())
    }

    /// Whether a file changed since the current config was built (or since the last failed
    /// attempt at the change: a bad file is reported once, not every check).
    pub fn files_changed(&self) -> bool {
        let now = stamps(&self.settings.load());
        let Ok(mut s) = self.stamps.lock() else {
            return false;
        };
        if *s == now {
            return false;
        }
        *s = now;
        true
    }
}

fn stamps(settings: &TlsConfig) -> Vec<Option<SystemTime>> {
    [
        &settings.cert_file,
        &settings.key_file,
        &settings.client_ca_file,
    ]
    .iter()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

/// Builds a server config from the files of `settings`.
fn build(settings: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("tls.cert_file", &settings.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|e| {
        error(
            "tls.key_file",
            &settings.key_file,
            format!("no private key read: {e}"),
        )
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = if settings.min_version == "1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| error("tls.min_version", Path::new(""), e.to_string()))?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let path = &settings.client_ca_file;
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("tls.client_ca_file", path)? {
                roots.add(cert).map_err(|e| {
                    error(
                        "tls.client_ca_file",
                        path,
                        format!("not a CA certificate: {e}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| {
                error(
                    "tls.client_ca_file",
                    path,
                    format!("cannot verify with it: {e}"),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        error(
            "tls.key_file",
            &settings.key_file,
            format!("does not go with tls.cert_file: {e}"),
        )
    })?;
    Ok(config)
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(key, path, format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(key, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(error(key, path, "holds no certificate"));
    }
    Ok(certs)
}

/// The username a client certificate carries: its subject Common Name, or its first DNS,
/// e-mail or URI Subject Alternative Name.
pub(crate) fn username_of(cert: &[u8], from: UsernameFrom) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    match from {
        UsernameFrom::Connect => None,
        UsernameFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        UsernameFrom::San => {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some((*s).to_owned())
                }
                _ => None,
            })
        }
    }
}

/// The tenant a client certificate's subject names in `field` (O or OU).
pub(crate) fn tenant_of(cert: &[u8], field: TenantField) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let subject = cert.subject();
    let value = match field {
        TenantField::None => return None,
        TenantField::O => subject.iter_organization().next(),
        TenantField::Ou => subject.iter_organizational_unit().next(),
    };
    value.and_then(|v| v.as_str().ok()).map(str::to_owned)
}
