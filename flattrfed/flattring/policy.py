"""The instance's admin-settable policy: seeded from settings once, then changed by admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.config import Settings
from flattrfed.db.models import InstancePolicy, PolicyChange

REGISTRATION_MODES = ("open", "approval", "invite", "closed")
DEFAULT_MIN_PAYOUT_MINOR = 1_000


class PolicyError(ValueError):
    """A policy value an admin gave is not allowed; the message says what is."""


@dataclass(frozen=True)
class Policy:
    registration: str
    fee_bp: int
    budget_min_minor: int
    budget_max_minor: int
    min_payout_minor: int
    receiving_needs_budget: bool


def _as_policy(row: InstancePolicy) -> Policy:
    return Policy(
        registration=row.registration,
        fee_bp=row.fee_bp,
        budget_min_minor=row.budget_min_minor,
        budget_max_minor=row.budget_max_minor,
        min_payout_minor=row.min_payout_minor,
        receiving_needs_budget=row.receiving_needs_budget,
    )


async def current_policy(session: AsyncSession, settings: Settings, now: datetime) -> Policy:
    """The policy row, created from the settings on first use (settings only seed it)."""
    row = await session.scalar(select(InstancePolicy).where(InstancePolicy.id == 1))
    if row is None:
        row = InstancePolicy(
            id=1,
            registration=settings.registration,
            fee_bp=settings.fee_bp,
            budget_min_minor=settings.budget_min_minor,
            budget_max_minor=settings.budget_max_minor,
            min_payout_minor=DEFAULT_MIN_PAYOUT_MINOR,
            receiving_needs_budget=False,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
    return _as_policy(row)


def _stored(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)[:64]


async def update_policy(
    session: AsyncSession,
    settings: Settings,
    now: datetime,
    *,
    changed_by: str = "",
    **changes: object,
) -> Policy:
    """Change policy settings; each value that really changes is kept in policy_changes."""
    await current_policy(session, settings, now)
    row = await session.scalar(select(InstancePolicy).where(InstancePolicy.id == 1))
    assert row is not None
    history: list[PolicyChange] = []
    for name, value in changes.items():
        if name == "registration":
            if value not in REGISTRATION_MODES:
                raise PolicyError(f"registration must be one of {', '.join(REGISTRATION_MODES)}")
        elif name == "fee_bp":
            if not isinstance(value, int) or not 0 <= value <= 10_000:
                raise PolicyError("fee_bp must be a whole number from 0 to 10000")
        elif name in {"budget_min_minor", "budget_max_minor", "min_payout_minor"}:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PolicyError(f"{name} must be a positive whole number of minor units")
        elif name == "receiving_needs_budget":
            if not isinstance(value, bool):
                raise PolicyError("receiving_needs_budget must be true or false")
        else:
            raise PolicyError(f"unknown policy setting {name!r}")
        old = getattr(row, name)
        if old != value:
            history.append(
                PolicyChange(
                    setting=name,
                    old_value=_stored(old),
                    new_value=_stored(value),
                    changed_by=changed_by[:255],
                    changed_at=now,
                )
            )
        setattr(row, name, value)
    if row.budget_min_minor > row.budget_max_minor:
        raise PolicyError("the budget minimum must not be above the maximum")
    row.updated_at = now
    session.add_all(history)
    await session.flush()
    return _as_policy(row)
