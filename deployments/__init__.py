"""Prefect deployment definitions (prefect.yaml) and job templates."""
