"""Routing: the pure routing decision and the router service that applies it."""
