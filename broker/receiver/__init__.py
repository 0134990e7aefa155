"""The receiver's side: deliver referrals to the sinks once, remember them, send statuses."""
