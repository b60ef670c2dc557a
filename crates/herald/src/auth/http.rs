//! The HTTP client of the callout and of JWKS fetches: pooled connections, http and https, timeouts.
