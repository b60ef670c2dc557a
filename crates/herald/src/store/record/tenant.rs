//! A tenant's own settings, as the admin API set them.
//!
//! Key: the tenant's name (UTF-8, 1 to 64 bytes). Value: the format byte, then the settings
//! as a JSON object with the keys of `[tenants.defaults]` (those left out are the
//! defaults'). JSON rather than a fixed layout: the settings are a few dozen optional
//! values that grow with Herald, written only when an operator changes them; a record
//! written before a key existed reads with that key left out. A key this version does not
//! know (a record written by a newer Herald) is refused as damaged rather than dropped.

use super::{DecodeError, DecodeResult, FORMAT};
use crate::config::TenantLimits;

/// A tenant's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tenant's name (the key).
    pub name: String,
    /// Its own settings.
    pub limits: TenantLimits,
}

impl TenantRecord {
    /// The key bytes.
    pub fn key(name: &str) -> Vec<u8> {
        name.as_bytes().to_vec()
    }

    /// The value bytes; `Err` only if the settings do not serialize (they always do: plain
    /// numbers, booleans and strings).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut w = vec![FORMAT];
        serde_json::to_writer(&mut w, &self.limits)?;
        Ok(w)
    }

    /// Reads a key and its value.
    pub fn decode(k: &[u8], v: &[u8]) -> DecodeResult<TenantRecord> {
        let name = String::from_utf8(k.to_vec()).map_err(|_| DecodeError::KeyNotUtf8)?;
        let json = match v.split_first() {
            Some((&FORMAT, rest)) => rest,
            Some((other, _)) => return Err(DecodeError::Format(*other)),
            None => return Err(DecodeError::Empty),
        };
        let limits =
            serde_json::from_slice(json).map_err(|e| DecodeError::Settings(e.to_string()))?;
        Ok(TenantRecord { name, limits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let rec = TenantRecord {
            name: "acme".into(),
            limits: TenantLimits {
                max_connections: Some(10),
                max_qos: Some(1),
                protocols: Some(vec!["5".into()]),
                ..TenantLimits::default()
            },
        };
        let v = rec.encode().expect("encodes");
        assert_eq!(v[0], FORMAT);
        let k = TenantRecord::key(&rec.name);
        assert_eq!(TenantRecord::decode(&k, &v), Ok(rec));
        for n in 1..v.len() {
            assert!(
                matches!(
                    TenantRecord::decode(&k, &v[..n]),
                    Err(DecodeError::Settings(_))
                ),
                "cut at {n}"
            );
        }
        assert_eq!(TenantRecord::decode(&k, &[]), Err(DecodeError::Empty));
        assert_eq!(
            TenantRecord::decode(&k, b"\x07{}"),
            Err(DecodeError::Format(7))
        );
        assert_eq!(
            TenantRecord::decode(&[0xff], &v),
            Err(DecodeError::KeyNotUtf8)
        );
        let unknown = TenantRecord::decode(&k, b"\x01{\"max_widgets\": 3}");
        assert!(
            matches!(&unknown, Err(DecodeError::Settings(m)) if m.contains("max_widgets")),
            "{unknown:?}"
        );
        let empty = TenantRecord::decode(&k, b"\x01{}").expect("no key: the defaults");
        assert_eq!(empty.limits, TenantLimits::default());
    }
}
