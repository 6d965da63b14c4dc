"""Job kinds: one module per kind, each registering itself with ``registry.register``."""
