"""Security: organisation keys, signatures, sealed bodies and the rules at both ends."""
