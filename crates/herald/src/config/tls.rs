//! `[tls]`: the certificates of the `tls` and `wss` listeners, and client certificates.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Client certificates: whether they are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Not asked for.
    None,
    /// Asked for and verified against `tls.client_ca_file` when given; clients without one
    /// are accepted.
    Optional,
    /// Required: a client without a certificate the CA signed is refused in the handshake.
    Required,
}

/// Where a client's username may come from besides CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernameFrom {
    /// CONNECT's username field.
    Connect,
    /// The client certificate's subject Common Name (replacing CONNECT's username).
    Cn,
    /// The client certificate's first DNS, e-mail or URI Subject Alternative Name.
    San,
}

/// Where a client's tenant may come from in its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantField {
    /// Not from the certificate.
    None,
    /// The subject's Organization (O).
    O,
    /// The subject's Organizational Unit (OU).
    Ou,
}

/// TLS for the `tls` and `wss` listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates client certificates are verified against.
    pub client_ca_file: PathBuf,
    /// Client certificates: `none`, `optional` or `required` (mTLS).
    pub client_auth: ClientAuth,
    /// Take the client's username from its certificate: `connect` (no), `cn` or `san`.
    pub username_from: UsernameFrom,
    /// Take the client's tenant from its certificate's subject: `none`, `o` or `ou`.
    pub tenant_from: TenantField,
    /// Oldest TLS version accepted: "1.2" or "1.3".
    pub min_version: String,
    /// Seconds between checks of the certificate files for changes (0: only SIGHUP reloads
    /// them).
    pub watch_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            client_auth: ClientAuth::None,
            username_from: UsernameFrom::Connect,
            tenant_from: TenantField::None,
            min_version: "1.2".into(),
            watch_secs: 0,
        }
    }
}

impl TlsConfig {
    /// Checks that the files are named where `listeners_need_tls` or client certificates
    /// need them, and the options that depend on each other.
    pub(super) fn validate(&self, listeners_need_tls: bool) -> Result<(), ConfigError> {
        if listeners_need_tls {
            if self.cert_file.as_os_str().is_empty() {
                return Err(invalid(
                    "tls.cert_file",
                    "a TLS or WSS listener needs a certificate chain (--tls-cert)",
                ));
            }
            if self.key_file.as_os_str().is_empty() {
                return Err(invalid(
                    "tls.key_file",
                    "a TLS or WSS listener needs the certificate's private key (--tls-key)",
                ));
            }
        }
        if self.client_auth != ClientAuth::None && self.client_ca_file.as_os_str().is_empty() {
            return Err(invalid(
                "tls.client_ca_file",
                "client certificates (tls.client_auth) are verified against a CA file",
            ));
        }
        if self.username_from != UsernameFrom::Connect && self.client_auth == ClientAuth::None {
            return Err(invalid(
                "tls.username_from",
                "needs client certificates (tls.client_auth = \"optional\" or \"required\")",
            ));
        }
        if self.tenant_from != TenantField::None && self.client_auth == ClientAuth::None {
            return Err(invalid(
                "tls.tenant_from",
                "needs client certificates (tls.client_auth = \"optional\" or \"required\")",
            ));
        }
        if self.min_version != "1.2" && self.min_version != "1.3" {
            return Err(invalid(
                "tls.min_version",
                format!("{:?}: must be \"1.2\" or \"1.3\"", self.min_version),
            ));
        }
        Ok(())
    }
}
