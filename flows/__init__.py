"""Prefect flows and the ``ponder`` command line."""
