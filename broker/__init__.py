"""referral-broker: the library (models, codec, routing, router, tracing, ledger)."""
