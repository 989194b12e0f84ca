"""Money in and out: deposit requests and their manual recording, budgets, payout requests."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.db.models import DepositRequest, Member, PayoutRequest
from flattrfed.flattring.policy import Policy
from flattrfed.money import Money
from flattrfed.settlement import ledger

REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: references are typed by hand


class WalletError(ValueError):
    """A money request that cannot be done; the message says why, for the member or admin."""


class PaymentProvider(Protocol):
    """How money reaches a wallet. The built-in one is `manual`: an admin records bank transfers."""

    name: str

    def instructions(self, reference: str, currency: str) -> str: ...


class ManualBankTransfer:
    """Members transfer to the instance's bank account quoting a reference; an admin records it."""

    name = "manual"

    def instructions(self, reference: str, currency: str) -> str:
        return (
            f"Transfer any amount in {currency} to the instance's bank account and write "
            f"{reference} in the payment reference. An admin credits your wallet when it arrives."
        )


def _check_character(body: str) -> str:
    # A weighted check character catches most mistyped references (and swapped neighbours)
    # before an admin credits the wrong member.
    total = sum(REFERENCE_ALPHABET.index(char) * (index + 1) for index, char in enumerate(body))
    return REFERENCE_ALPHABET[total % len(REFERENCE_ALPHABET)]


def new_reference() -> str:
    body = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))
    return f"FL-{body[:4]}-{body[4:]}{_check_character(body)}"


def reference_is_well_formed(reference: str) -> bool:
    parts = reference.split("-")
    if len(parts) != 3 or parts[0] != "FL" or len(parts[1]) != 4 or len(parts[2]) != 5:
        return False
    body = parts[1] + parts[2][:4]
    if any(char not in REFERENCE_ALPHABET for char in body):
        return False
    return parts[2][4] == _check_character(body)


async def request_deposit(
    session: AsyncSession, member: Member, provider: PaymentProvider, now: datetime
) -> DepositRequest:
    request = DepositRequest(
        member_id=member.id,
        provider=provider.name,
        reference=new_reference(),
        state="open",
        created_at=now,
    )
    session.add(request)
    await session.flush()
    return request


async def record_deposit(
    session: AsyncSession,
    *,
    member: Member,
    amount: Money,
    bank_reference: str,
    currency: str,
    now: datetime,
    reference: str | None = None,
    recorded_by: Member | None = None,
) -> DepositRequest:
    """An admin records a received transfer: the wallet is credited in one balanced transaction.

    With `reference`, the member's open deposit request is matched; without, a request is made
    on the spot (the admin identified the member another way). Recording the same bank
    reference twice is refused, so one transfer can never be credited twice.
    """
    if amount.currency != currency:
        raise WalletError(f"this instance works in {currency}, not {amount.currency}")
    if amount.amount_minor <= 0:
        raise WalletError("a deposit must be a positive amount")
    bank_reference = bank_reference.strip()
    if not bank_reference:
        raise WalletError("the bank reference of the transfer is required")
    duplicate = await session.scalar(
        select(DepositRequest.id).where(DepositRequest.bank_reference == bank_reference)
    )
    if duplicate is not None:
        raise WalletError(f"bank transfer {bank_reference!r} was already recorded")
    if reference is not None:
        if not reference_is_well_formed(reference.strip().upper()):
            raise WalletError(f"{reference!r} is not a deposit reference (mistyped?)")
        request = await session.scalar(
            select(DepositRequest).where(DepositRequest.reference == reference.strip().upper())
        )
        if request is None or request.member_id != member.id:
            raise WalletError(f"no deposit request {reference!r} for {member.username}")
        if request.state != "open":
            raise WalletError(f"deposit request {reference} is already {request.state}")
    else:
        request = await request_deposit(session, member, ManualBankTransfer(), now)
    request.state = "credited"
    request.amount_minor = amount.amount_minor
    request.bank_reference = bank_reference
    request.credited_at = now
    request.recorded_by = recorded_by.id if recorded_by is not None else None
    await ledger.post(
        session,
        txid=ledger.deposit_txid(request.reference),
        kind="deposit",
        postings=[
            (ledger.CASH_BANK, amount.amount_minor),
            (ledger.wallet(member.id), -amount.amount_minor),
        ],
        currency=currency,
        memo=f"bank transfer {bank_reference}",
        now=now,
    )
    await session.flush()
    return request


def check_budget(amount_minor: int, policy: Policy, currency: str) -> None:
    if not policy.budget_min_minor <= amount_minor <= policy.budget_max_minor:
        low = Money(policy.budget_min_minor, currency).format()
        high = Money(policy.budget_max_minor, currency).format()
        raise WalletError(f"the monthly budget must be between {low} and {high}")


async def set_budget(
    session: AsyncSession, member: Member, amount_minor: int | None, policy: Policy, currency: str
) -> None:
    """Set (or with None, remove) the monthly budget; it applies to the open period."""
    if amount_minor is not None:
        check_budget(amount_minor, policy, currency)
    member.monthly_budget_minor = amount_minor
    await session.flush()


async def request_payout(
    session: AsyncSession,
    member: Member,
    amount: Money,
    policy: Policy,
    currency: str,
    now: datetime,
) -> PayoutRequest:
    """Move available earnings into a payout request an admin will pay by bank transfer."""
    if amount.currency != currency:
        raise WalletError(f"this instance pays out in {currency}")
    if amount.amount_minor < policy.min_payout_minor:
        minimum = Money(policy.min_payout_minor, currency).format()
        raise WalletError(f"the minimum payout is {minimum}")
    available = await ledger.owed_to_member(session, ledger.earnings_available(member.id))
    if amount.amount_minor > available:
        raise WalletError(
            f"only {Money(available, currency).format()} of earnings are available to pay out"
        )
    payout = PayoutRequest(
        member_id=member.id, amount_minor=amount.amount_minor, state="requested", created_at=now
    )
    session.add(payout)
    await session.flush()
    await ledger.post(
        session,
        txid=ledger.payout_txid(payout.id, "requested"),
        kind="payout_request",
        postings=[
            (ledger.earnings_available(member.id), amount.amount_minor),
            (ledger.payouts_pending(member.id), -amount.amount_minor),
        ],
        currency=currency,
        memo="payout requested",
        now=now,
    )
    return payout


async def mark_payout_paid(
    session: AsyncSession, payout: PayoutRequest, bank_reference: str, currency: str, now: datetime
) -> None:
    if payout.state != "requested":
        raise WalletError(f"payout {payout.id} is {payout.state}, not requested")
    if not bank_reference.strip():
        raise WalletError("the bank reference of the payment is required")
    payout.state = "paid"
    payout.bank_reference = bank_reference.strip()
    payout.paid_at = now
    await ledger.post(
        session,
        txid=ledger.payout_txid(payout.id, "paid"),
        kind="payout",
        postings=[
            (ledger.payouts_pending(payout.member_id), payout.amount_minor),
            (ledger.CASH_BANK, -payout.amount_minor),
        ],
        currency=currency,
        memo=f"paid by bank transfer {payout.bank_reference}",
        now=now,
    )
    await session.flush()
