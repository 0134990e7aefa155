"""Takedown to removal: the per-item action trail, notices to hosting providers, the figures.

:mod:`~broker.takedown.trail` writes each step as a signed ``TAKEDOWN`` ledger event
(ids only); :mod:`~broker.takedown.desk` keeps the notice cadence on an injectable
clock; :mod:`~broker.takedown.figures` computes the removal figures from the ledger.
"""
