"""The handover ledger: events and their emitter, the hash-chained store, the operator views."""
