"""Prefect tasks: small units of work over domains, models and storage."""
