"""Shared by registry tests: start from a model with no aliases, whatever other tests left."""

from __future__ import annotations

from models.registry import connect


def clear_aliases(name: str) -> None:
    """Delete every alias of registered model ``name`` (nothing when it is not registered)."""
    client = connect()
    try:
        aliases = client.get_registered_model(name).aliases
    except Exception:  # noqa: BLE001 (not registered yet)
        return
    for alias in aliases:
        client.delete_registered_model_alias(name, alias)
