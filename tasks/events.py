"""The Prefect events that chain ponder's stages, named in one place.

Each stage announces what it produced; ``deployments/prefect.yaml`` triggers the next
stage on it. The resource id is ``<event family>.<domain>`` (e.g. ``ponder.policy.medicine``)
so a trigger can match one domain or, with a trailing ``*``, all of them.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

FEEDBACK_READY = "ponder.feedback.ready"  # collect: enough new feedback for refresh_reward
REWARD_PROMOTED = "ponder.reward.promoted"  # refresh_reward: a new ORM/PRM champion
POLICY_CHALLENGER = "ponder.policy.challenger"  # finetune: a policy challenger registered
POLICY_PROMOTED = "ponder.policy.promoted"  # evaluate_promote: a new policy champion


def resource_id(event: str, domain: str) -> str:
    return f"{event.rsplit('.', 1)[0]}.{domain}"


def announce(event: str, domain: str, **payload: Any) -> None:
    """Emit ``event`` for ``domain`` with the payload (plain JSON values: URIs, versions)."""
    emit_event(
        event=event,
        resource={"prefect.resource.id": resource_id(event, domain)},
        payload={"domain": domain, **payload},
    )
