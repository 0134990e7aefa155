"""The origin's side: publish referrals, keep them in the outbox until answered, act on statuses."""
