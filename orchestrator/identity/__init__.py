"""Identity: enrollment, renewal, revocation, the CRL, operators and enrollment tokens."""
