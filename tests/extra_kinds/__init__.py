"""A Django app of the test suite whose only purpose is to add a job kind from outside Runboard:
its ``jobkinds`` module is found like an ``admin`` module (jobs.kinds.registry.autodiscover)."""
