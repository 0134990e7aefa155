"""referral-broker: the library, in folders by job (wire, routing, security, ledger, kafka)."""
