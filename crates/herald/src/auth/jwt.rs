//! JSON Web Tokens: HS256/384/512, RS256, ES256 and EdDSA; keys from PEM files, a JWKS file or a JWKS URL.
