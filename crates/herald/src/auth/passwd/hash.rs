//! The hash forms of a password file, parsed once when the file is read and verified as
//! the tools that wrote them compute them.
//!
//! - `$7$<iterations>$<salt>$<hash>` (mosquitto 2.x's default): PBKDF2-HMAC-SHA512 of the
//!   password with the salt's bytes, `iterations` rounds, 64 bytes out.
//! - `$6$<salt>$<hash>` (mosquitto 1.6 and earlier): one SHA-512 over the password's bytes
//!   then the salt's. Not crypt(3)'s sha512-crypt, whose strings start `$6$` too.
//! - `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: a PHC string, as `herald passwd` (and
//!   mosquitto 2.1) write them.
//!
//! mosquitto's salts and hashes are standard base64 with padding. Its salts are 12 bytes
//! (mosquitto_passwd 2.0) or 64 bytes (2.1); its hashes are 64 bytes. Every comparison is in
//! constant time.

use std::num::NonZeroU32;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use data_encoding::BASE64;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use super::{PasswdError, Problem};

/// The most PBKDF2 rounds a `$7$` hash may ask for: 50 times OWASP's 210,000 for
/// PBKDF2-HMAC-SHA512, several seconds of one core per check. More is refused when the
/// file is read, so that a typo cannot turn each CONNECT into minutes of work.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The most memory (KiB) an argon2id hash may ask for: 1 GiB per check in progress.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1 << 20;

/// The most argon2id passes a hash may ask for.
pub const MAX_ARGON2_ITERATIONS: u32 = 64;

/// The most argon2id lanes a hash may ask for.
pub const MAX_ARGON2_PARALLELISM: u32 = 64;

/// The argon2id memory cost `herald passwd` writes (KiB): OWASP's recommended minimum
/// (19 MiB, two passes, one lane).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;

/// The argon2id passes `herald passwd` writes.
pub const ARGON2_ITERATIONS: u32 = 2;

/// The argon2id lanes `herald passwd` writes.
pub const ARGON2_PARALLELISM: u32 = 1;

/// Bytes of random salt `herald passwd` writes.
const ARGON2_SALT_LEN: usize = 16;

/// Bytes of hash `herald passwd` writes.
const ARGON2_OUTPUT_LEN: usize = 32;

/// mosquitto's hash length (`HASH_LEN`), also the length of its 2.1 salts.
const MOSQUITTO_HASH_LEN: usize = 64;

/// mosquitto 2.0's salt length.
const MOSQUITTO_SHORT_SALT_LEN: usize = 12;

/// A hash from a password file: its text as written, and the form it was parsed into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hash {
    /// The text as it appears in the file (what is written back, and what the memory of a
    /// successful check is keyed on).
    text: String,
    /// What the text says.
    form: Form,
}

/// A parsed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// `$6$`: SHA-512 of the password then the salt.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$argon2id$`: kept as the PHC text (checked when parsed), with its costs.
    Argon2id {
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    },
}

/// Which form a hash has, and what checking a password against it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `$6$`: one SHA-512 (cheap: no slower than a MAC).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many rounds.
    Pbkdf2Sha512 {
        /// Rounds.
        iterations: u32,
    },
    /// `$argon2id$`.
    Argon2id {
        /// Memory, KiB.
        memory_kib: u32,
        /// Passes over the memory.
        iterations: u32,
        /// Lanes.
        parallelism: u32,
    },
}

impl Hash {
    /// Parses a hash as it appears after `username:`. The error never quotes it.
    pub fn parse(text: &str) -> Result<Hash, Problem> {
        let form = if let Some(rest) = text.strip_prefix("$7$") {
            parse_pbkdf2(rest)?
        } else if let Some(rest) = text.strip_prefix("$6$") {
            parse_sha512(rest)?
        } else if text.starts_with("$argon2") {
            parse_argon2id(text)?
        } else if text.is_empty() {
            return Err(Problem::EmptyHash);
        } else {
            return Err(unknown(text));
        };
        Ok(Hash {
            text: text.to_owned(),
            form,
        })
    }

    /// A new argon2id hash of `password` with a random salt and Herald's costs
    /// ([`ARGON2_MEMORY_KIB`], [`ARGON2_ITERATIONS`], [`ARGON2_PARALLELISM`]).
    pub fn argon2id(password: &[u8]) -> Result<Hash, PasswdError> {
        let mut salt = [0u8; ARGON2_SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| PasswdError::Hashing("no random bytes for the salt".into()))?;
        let salt = SaltString::encode_b64(&salt).map_err(hashing)?;
        let params = Params::new(
            ARGON2_MEMORY_KIB,
            ARGON2_ITERATIONS,
            ARGON2_PARALLELISM,
            Some(ARGON2_OUTPUT_LEN),
        )
        .map_err(|e| PasswdError::Hashing(e.to_string()))?;
        let text = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password, &salt)
            .map_err(hashing)?
            .to_string();
        Hash::parse(&text).map_err(PasswdError::Entry)
    }

    /// The hash as written in the file.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its form and costs.
    pub fn scheme(&self) -> Scheme {
        match self.form {
            Form::Sha512 { .. } => Scheme::Sha512,
            Form::Pbkdf2 { iterations, .. } => Scheme::Pbkdf2Sha512 {
                iterations: iterations.get(),
            },
            Form::Argon2id {
                memory_kib,
                iterations,
                parallelism,
            } => Scheme::Argon2id {
                memory_kib,
                iterations,
                parallelism,
            },
        }
    }

    /// Whether checking a password costs about as much as remembering it did (`$6$`):
    /// such checks are neither remembered nor moved off the async workers.
    pub fn is_cheap(&self) -> bool {
        matches!(self.form, Form::Sha512 { .. })
    }

    /// Whether `password` is the one hashed. Slow on purpose for `$7$` and argon2id: call
    /// it off the async workers.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.form {
            Form::Sha512 { salt, hash } => {
                let mut context = ring::digest::Context::new(&ring::digest::SHA512);
                context.update(password);
                context.update(salt);
                bool::from(context.finish().as_ref().ct_eq(hash))
            }
            Form::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => ring::pbkdf2::verify(
                ring::pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Form::Argon2id { .. } => PasswordHash::new(&self.text)
                .is_ok_and(|phc| Argon2::default().verify_password(password, &phc).is_ok()),
        }
    }
}

/// A hashing failure, as the command reports it.
fn hashing(e: argon2::password_hash::Error) -> PasswdError {
    PasswdError::Hashing(e.to_string())
}

/// What is wrong with a hash of no known form: its identifier (between its first two `$`,
/// `$2y$` for bcrypt) when it looks like one, a hint that never quotes the hash itself.
fn unknown(text: &str) -> Problem {
    if !text.starts_with('$') {
        return Problem::NotAHash;
    }
    let id = text[1..]
        .split_once('$')
        .map(|(id, _)| id)
        .filter(|id| (1..=12).contains(&id.len()))
        .filter(|id| id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    Problem::UnknownHash(id.map(|id| format!(" ${id}$")).unwrap_or_default())
}

/// A problem with a hash of this scheme.
fn bad(scheme: &'static str, what: impl Into<String>) -> Problem {
    Problem::BadHash {
        scheme,
        what: what.into(),
    }
}

/// Decodes a base64 field of a mosquitto hash, which must be `lengths` bytes long.
fn base64_field(
    scheme: &'static str,
    name: &str,
    text: &str,
    lengths: &[usize],
) -> Result<Vec<u8>, Problem> {
    let bytes = BASE64
        .decode(text.as_bytes())
        .map_err(|_| bad(scheme, format!("the {name} is not base64 with padding")))?;
    if !lengths.contains(&bytes.len()) {
        let expected = match lengths {
            [one] => one.to_string(),
            _ => format!("{} or {}", lengths[0], lengths[1]),
        };
        return Err(bad(
            scheme,
            format!(
                "the {name} is {} bytes long ({expected} expected)",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// The fields of a mosquitto hash after its `$n$`, which must be `count` of them.
fn fields<'a>(scheme: &'static str, rest: &'a str, count: usize) -> Result<Vec<&'a str>, Problem> {
    let fields: Vec<&str> = rest.split('$').collect();
    if fields.len() != count || fields.iter().any(|f| f.is_empty()) {
        let expected = if count == 3 {
            "$7$<iterations>$<salt>$<hash>"
        } else {
            "$6$<salt>$<hash>"
        };
        return Err(bad(scheme, format!("expected {expected}")));
    }
    Ok(fields)
}

/// `$7$<iterations>$<salt>$<hash>`.
fn parse_pbkdf2(rest: &str) -> Result<Form, Problem> {
    const SCHEME: &str = "$7$";
    let fields = fields(SCHEME, rest, 3)?;
    if !fields[0].bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(SCHEME, "the iteration count is not a number"));
    }
    let iterations = fields[0]
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_PBKDF2_ITERATIONS)
        .ok_or_else(|| {
            bad(
                SCHEME,
                format!("more than {MAX_PBKDF2_ITERATIONS} iterations"),
            )
        })?;
    let iterations =
        NonZeroU32::new(iterations).ok_or_else(|| bad(SCHEME, "the iteration count is 0"))?;
    let salt = base64_field(
        SCHEME,
        "salt",
        fields[1],
        &[MOSQUITTO_SHORT_SALT_LEN, MOSQUITTO_HASH_LEN],
    )?;
    let hash = base64_field(SCHEME, "hash", fields[2], &[MOSQUITTO_HASH_LEN])?;
    Ok(Form::Pbkdf2 {
        iterations,
        salt,
        hash,
    })
}

/// `$6$<salt>$<hash>`.
fn parse_sha512(rest: &str) -> Result<Form, Problem> {
    const SCHEME: &str = "$6$";
    let fields = fields(SCHEME, rest, 2)?;
    let salt = base64_field(
        SCHEME,
        "salt",
        fields[0],
        &[MOSQUITTO_SHORT_SALT_LEN, MOSQUITTO_HASH_LEN],
    )?;
    let hash = base64_field(SCHEME, "hash", fields[1], &[MOSQUITTO_HASH_LEN])?;
    Ok(Form::Sha512 { salt, hash })
}

/// An argon2id PHC string, with costs Herald is willing to pay.
fn parse_argon2id(text: &str) -> Result<Form, Problem> {
    const SCHEME: &str = "argon2id";
    let phc =
        PasswordHash::new(text).map_err(|e| bad(SCHEME, format!("not a PHC string ({e})")))?;
    if phc.algorithm.as_str() != "argon2id" {
        return Err(bad(
            SCHEME,
            format!(
                "${}$ is not accepted, only $argon2id$",
                phc.algorithm.as_str()
            ),
        ));
    }
    if phc.version != Some(0x13) {
        return Err(bad(SCHEME, "the version must be v=19"));
    }
    if phc.salt.is_none() || phc.hash.is_none() {
        return Err(bad(SCHEME, "no salt or no hash"));
    }
    let params =
        Params::try_from(&phc).map_err(|e| bad(SCHEME, format!("bad parameters ({e})")))?;
    let (memory_kib, iterations, parallelism) = (params.m_cost(), params.t_cost(), params.p_cost());
    for (name, value, max) in [
        ("m", memory_kib, MAX_ARGON2_MEMORY_KIB),
        ("t", iterations, MAX_ARGON2_ITERATIONS),
        ("p", parallelism, MAX_ARGON2_PARALLELISM),
    ] {
        if value > max {
            return Err(bad(SCHEME, format!("{name}={value} is over {max}")));
        }
    }
    Ok(Form::Argon2id {
        memory_kib,
        iterations,
        parallelism,
    })
}
