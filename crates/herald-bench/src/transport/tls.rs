//! TLS for the clients (rustls with the ring provider, as the workspace chooses), and the
//! self-signed certificate `compare --set transports` gives the brokers it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{TlsVersion, TransportSpec};

/// The rustls client configuration `spec` asks for: its CA bundle (or no verification with
/// `insecure`) and its TLS version, if one is forced.
pub fn client_config(spec: &TransportSpec) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match spec.tls_version {
        None => rustls::DEFAULT_VERSIONS,
        Some(TlsVersion::V1_2) => &[&rustls::version::TLS12],
        Some(TlsVersion::V1_3) => &[&rustls::version::TLS13],
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("TLS versions")?;
    let config = if spec.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth()
    } else {
        let Some(ca) = &spec.tls_ca else {
            bail!("TLS needs --tls-ca FILE or --insecure");
        };
        builder
            .with_root_certificates(root_store(ca)?)
            .with_no_client_auth()
    };
    Ok(config)
}

/// The certificates of a PEM bundle, as trust anchors.
fn root_store(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading --tls-ca {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a CA certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("--tls-ca {}: no certificate in it", path.display());
    }
    Ok(roots)
}

/// `--insecure`: any certificate is accepted, but the handshake signatures are still checked
/// (the cost of a real handshake stays in the measurement).
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertFiles {
    /// The certificate (self-signed: it is also the CA clients trust).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Generates a self-signed certificate for `localhost` and `127.0.0.1` (ECDSA P-256) and
/// writes `cert.pem` and `key.pem` into `dir`.
pub fn self_signed(dir: &Path) -> anyhow::Result<CertFiles> {
    std::fs::create_dir_all(dir)?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let generated =
        rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    let files = CertFiles {
        cert: std::path::absolute(dir.join("cert.pem"))?,
        key: std::path::absolute(dir.join("key.pem"))?,
    };
    std::fs::write(&files.cert, generated.cert.pem())?;
    std::fs::write(&files.key, generated.signing_key.serialize_pem())?;
    Ok(files)
}
