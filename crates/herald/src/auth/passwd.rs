//! mosquitto's password file: `$7$` (PBKDF2-SHA512) and `$6$` (SHA-512) hashes verified as mosquitto_passwd wrote them; argon2id for the entries `herald passwd` writes.
