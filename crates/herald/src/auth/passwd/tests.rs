//! Unit tests of the password-file method.
