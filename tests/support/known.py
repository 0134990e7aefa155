"""Shared helpers of the known-content tests: the scenario's network and a running evaluator."""

from __future__ import annotations

from bench.known_net import HOTLINES, known_network, running_evaluator

__all__ = ["HOTLINES", "known_network", "running_evaluator"]
