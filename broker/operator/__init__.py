"""The operator's service, used by both faces (``referral`` CLI and the web console).

Dead letters and their recorded replays, the ACCESSED recorder, topic statistics,
held checkpoints, ``tail``'s decoding and redaction, and the flows/trace/verify entry points.
"""
