"""Job kinds: one module (or package, with its work library) per kind, each registering itself
with ``registry.register``. Other apps add kinds in their own ``jobkinds`` module."""
