//! The rustls client configuration of `--cafile`, `--tls-use-os-certs`, `--cert`/`--key` and
//! `--insecure` (ring, as everywhere in Herald). Read once at start: a missing or unreadable
//! file is an error before the first connection, naming the flag.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use hyper_rustls::ConfigBuilderExt;
use rustls::client::WantsClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS flags.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsOptions {
    /// `--cafile`: the CA certificates that verify the server.
    pub(super) cafile: Option<PathBuf>,
    /// `--cert` and `--key`: a client certificate chain and its key.
    pub(super) client_cert: Option<(PathBuf, PathBuf)>,
    /// `--insecure`: no verification at all.
    pub(super) insecure: bool,
}

/// The client configuration these options describe. Without `--cafile` or `--insecure` the
/// operating system's CA certificates verify the server.
pub(super) fn client_config(o: &TlsOptions) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .context("TLS versions")?;
    let builder: ConfigBuilder<ClientConfig, WantsClientCert> = if o.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else if let Some(ca) = &o.cafile {
        builder.with_root_certificates(root_store(ca)?)
    } else {
        builder.with_native_roots().context(
            "--tls-use-os-certs: no usable CA certificate on this system (give --cafile)",
        )?
    };
    let config = match &o.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("--cert {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--cert {}: not a PEM certificate", cert.display()))?;
            if chain.is_empty() {
                bail!("--cert {}: no certificate in it", cert.display());
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("--key {}: no PEM private key in it", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .context("--cert and --key do not go together")?
        }
    };
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry: the host, a DNS name or an IP address.
pub(super) fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .with_context(|| format!("{host:?} is neither a DNS name nor an IP address"))
}

/// The certificates of a PEM bundle, as trust anchors.
fn root_store(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--cafile {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("--cafile {}: not PEM", path.display()))?;
        roots.add(cert).with_context(|| {
            format!("--cafile {}: a certificate rustls refuses", path.display())
        })?;
    }
    if roots.is_empty() {
        bail!("--cafile {}: no certificate in it", path.display());
    }
    Ok(roots)
}

/// `--insecure`: any certificate and any name pass; the handshake's signatures are still
/// checked, so the connection is at least with whoever holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
