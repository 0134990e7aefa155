"""Source and sink connectors, one small module per kind, on one base interface."""
