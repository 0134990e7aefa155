"""Known content: blind match tokens (RFC 9497 OPRF, ristretto255) and PDQ multi-index tokens."""
