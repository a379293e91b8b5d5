"""The context every stage builds once, at the top of its flow: settings, the lake, the run
id, the domain's redactor and the engine scope. Each flow used to repeat these lines; now a
flow says ``ctx = StageContext.open(params.domain)`` and hands ``ctx`` to its tasks, which
take it first and keyword-only arguments after it (``commit_cases(ctx, batch=cases)``).
Such a task uses ``cache_policy=NO_CACHE``: the context is not a cache key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from domains.base import Domain, get_domain
from domains.privacy import Redactor
from models.settings import Settings, get_settings
from tasks.lake import Lake


@dataclass(frozen=True)
class StageContext:
    """What a stage run shares with its tasks."""

    name: str  # the domain's registered name
    domain: Domain
    settings: Settings
    lake: Lake
    run_id: str  # the Prefect flow run id, or a fresh one outside Prefect
    redactor: Redactor

    @classmethod
    def open(cls, domain: str) -> StageContext:
        """Install log and trace redaction for this process, then resolve everything once."""
        from prefect.runtime import flow_run

        from models.redaction import install, redactor

        install()  # logs and trace spans of this process are masked
        settings = get_settings()
        return cls(
            name=domain,
            domain=get_domain(domain),
            settings=settings,
            lake=Lake(settings.lake_root),
            run_id=flow_run.get_id() or uuid.uuid4().hex,
            redactor=redactor(domain),
        )

    def engines(self) -> AbstractContextManager[Iterator[None]]:
        """A scope whose generation engines are shut down at its end."""
        from models.engine import scoped_generators

        return scoped_generators()
