"""Kafka plumbing: clients, the consume loop, dead letters, provisioning, embedded broker."""
