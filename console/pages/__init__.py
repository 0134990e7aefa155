"""The console's pages, one module per page group, each with its ``ROUTES``."""
