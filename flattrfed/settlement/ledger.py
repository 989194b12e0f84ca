"""The double-entry ledger: account codes, balanced idempotent posting, and balance reads."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final, Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.db.models import LedgerAccount, LedgerPosting, LedgerTransaction, Member
from flattrfed.db.statements import table_of
from flattrfed.money import is_currency

# Conventions (research/clearing.md §2.1-2.4):
#
# * Amounts are signed integers of minor units of the instance currency: a debit is positive, a
#   credit negative, and every transaction's postings sum to zero. An account's balance is the
#   debit-positive sum of its postings, so money the instance owes (a liability such as a wallet)
#   shows as a negative balance; `owed_to_member` turns it round.
# * `LedgerAccount.balance_minor` caches that sum. `post` changes it with
#   `UPDATE ... SET balance_minor = balance_minor + :x` in the caller's database transaction, which
#   on PostgreSQL also row-locks the account (concurrent debits of one wallet run one after the
#   other) and on SQLite takes the database's write lock (the driver begins a transaction only
#   at the first write, so `post` writes before it reads anything its checks depend on).
#   Accounts are locked in code order, so two postings never wait for each other in a cycle.
# * A transaction names each account at most once: callers sum the amounts per account first. This
#   keeps one stored posting per (transaction, account), so the canonical form that is hashed is
#   exactly what is stored.
# * `txid` is deterministic (derived from what the transaction is for), so a retry is a no-op; a
#   retry with other content raises LedgerConflict (TigerBeetle's `exists_with_different_*`).
# * Posted rows are never updated or deleted; corrections are reversing transactions.
#
# The movements the rest of flattrfed posts, with their txids, which `flattrfed check` traces:
#
# * deposit credited:  `deposit_txid(reference)`   debit `cash:bank`, credit `wallet(member)` by
#   the request's amount_minor.
# * payout requested:  `payout_txid(id, "requested")`  debit `earnings_available(member)`,
#   credit `payouts_pending(member)`; cancelled: `payout_txid(id, "cancelled")`, the reverse.
# * payout paid:       `payout_txid(id, "paid")`   debit `payouts_pending(member)` by the request's
#   amount_minor, credit `cash:bank`.
# * money entering or leaving for other reasons (bank fees, the operator's own top-ups) goes
#   against `external`; the instance's fee is credited to `income:fees`.
#
# If `post` raises, it may already have written part of the transaction: the caller's database
# transaction must be rolled back, which `Database.transaction()` does when the error propagates.
# (A savepoint cannot be used instead: the SQLite driver runs in its legacy transaction mode, in
# which releasing a savepoint could commit the caller's work.)

CASH_BANK: Final = "cash:bank"
FEES: Final = "income:fees"
EXTERNAL: Final = "external"

ASSET: Final = "asset"
LIABILITY: Final = "liability"
INCOME: Final = "income"
EQUITY: Final = "equity"

# Amounts stay exact in every JSON consumer (JavaScript numbers are exact below 2**53).
AMOUNT_LIMIT: Final = 2**53
# Column widths of the ledger tables; checked here so SQLite and PostgreSQL refuse alike.
MAX_TXID_LENGTH: Final = 300
MAX_KIND_LENGTH: Final = 32
MAX_CODE_LENGTH: Final = 300
MAX_MEMO_LENGTH: Final = 10_000

# Member liability accounts: what the instance owes one member, by what `member_balances` calls it.
MEMBER_ACCOUNT_SUFFIXES: Final = {
    "wallet": "wallet",
    "earnings_pending": "earnings:pending",
    "earnings_available": "earnings:available",
    "payouts_pending": "payouts:pending",
}
_MEMBER_SUFFIX_NAMES = {suffix: name for name, suffix in MEMBER_ACCOUNT_SUFFIXES.items()}

_MEMBER_CODE = re.compile(r"member:([1-9][0-9]{0,17}):(.+)")
_PEER_CODE = re.compile(r"peer:(.+):(payable|receivable)")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# A host as flattrfed writes it: lower-case name or IPv4, or a bracketed IPv6, optional port.
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9.-]{0,252})|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?")


class LedgerError(ValueError):
    """A transaction the ledger refuses: unbalanced, empty, a bad amount, code or currency."""


class Overdraft(LedgerError):
    """A member liability account (wallet, earnings, payouts) would end with a debit balance."""


class LedgerConflict(LedgerError):
    """The txid is already posted with different content; nothing was written."""


# --- account codes (research/clearing.md §2.3) --------------------------------------------------


def _member_code(member_id: int, suffix: str) -> str:
    if isinstance(member_id, bool) or not isinstance(member_id, int) or member_id <= 0:
        raise ValueError(f"member id must be a positive int, not {member_id!r}")
    return f"member:{member_id}:{suffix}"


def wallet(member_id: int) -> str:
    """`member:{id}:wallet`: a donor's prepaid balance (top-ups minus what was spent)."""
    return _member_code(member_id, "wallet")


def earnings_pending(member_id: int) -> str:
    """`member:{id}:earnings:pending`: shares acknowledged but not yet backed by cash."""
    return _member_code(member_id, "earnings:pending")


def earnings_available(member_id: int) -> str:
    """`member:{id}:earnings:available`: shares backed by cash, which the member may withdraw."""
    return _member_code(member_id, "earnings:available")


def payouts_pending(member_id: int) -> str:
    """`member:{id}:payouts:pending`: earnings the member asked to be paid, not yet paid out."""
    return _member_code(member_id, "payouts:pending")


def _peer_code(host: str, side: str) -> str:
    if not isinstance(host, str) or _HOST.fullmatch(host.lower()) is None:
        raise ValueError(f"not a host: {host!r}")
    return f"peer:{host.lower()}:{side}"


def peer_payable(host: str) -> str:
    """`peer:{host}:payable`: what this instance owes the peer (our donors, its things)."""
    return _peer_code(host, "payable")


def peer_receivable(host: str) -> str:
    """`peer:{host}:receivable`: what the peer owes this instance."""
    return _peer_code(host, "receivable")


def member_of(code: str) -> int | None:
    """The member id of a member account code, None for any other valid code."""
    account_kind(code)
    match = _MEMBER_CODE.fullmatch(code)
    return int(match.group(1)) if match else None


def account_kind(code: str) -> str:
    """asset, liability, income or equity, derived from the code; ValueError for unknown codes.

    cash:NAME and peer:HOST:receivable are assets; member:ID:(wallet | earnings:pending |
    earnings:available | payouts:pending) and peer:HOST:payable are liabilities; income:NAME is
    income; `external` is equity (money entering or leaving the instance).
    """
    if not isinstance(code, str):
        raise ValueError(f"unknown account code {code!r}")
    return _kind_of(code)


@lru_cache(maxsize=65_536)  # pure, and the close asks about the same few codes many times
def _kind_of(code: str) -> str:
    if not isinstance(code, str) or len(code) > MAX_CODE_LENGTH:
        raise ValueError(f"unknown account code {code!r}")
    if code == EXTERNAL:
        return EQUITY
    head, _, rest = code.partition(":")
    if head in ("cash", "income") and _NAME.fullmatch(rest):
        return ASSET if head == "cash" else INCOME
    if head == "member":
        match = _MEMBER_CODE.fullmatch(code)
        if match and match.group(2) in _MEMBER_SUFFIX_NAMES:
            return LIABILITY
    if head == "peer":
        match = _PEER_CODE.fullmatch(code)
        if match and _HOST.fullmatch(match.group(1)):
            return LIABILITY if match.group(2) == "payable" else ASSET
    raise ValueError(f"unknown account code {code!r}")


def is_member_liability(code: str) -> bool:
    """Whether the code is an account that owes one member money (never a debit balance)."""
    return account_kind(code) == LIABILITY and code.startswith("member:")


def deposit_txid(reference: str) -> str:
    """The txid of crediting a deposit request, `deposit:{reference}`."""
    return f"deposit:{reference}"


def close_txid(period: str, donor_id: int) -> str:
    """The txid of one donor's month close, `close:{period}:{donor_id}`."""
    return f"close:{period}:{donor_id}"


def payout_txid(payout_id: int, step: Literal["requested", "paid", "cancelled"]) -> str:
    """The txid of one step of a payout request, e.g. `payout:7:paid`."""
    return f"payout:{payout_id}:{step}"


# --- validation and the content hash (pure) -----------------------------------------------------


def _checked_text(name: str, value: object, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise LedgerError(f"{name} must be a str, not {type(value).__name__}")
    if not value and not empty:
        raise LedgerError(f"{name} must not be empty")
    if len(value) > limit:
        raise LedgerError(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise LedgerError(f"{name} must not contain NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LedgerError(f"{name} is not valid Unicode text") from None
    return value


def normalized_postings(postings: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """The postings sorted by account code, or LedgerError saying why they cannot be posted.

    Refused: no postings, a code outside the chart of accounts, an account named twice, an
    amount that is not an int (bools and floats included), zero, or not below 2**53 in
    magnitude, and postings that do not sum to zero.
    """
    seen: dict[str, int] = {}
    for item in postings:
        if not isinstance(item, tuple) or len(item) != 2:
            raise LedgerError(f"a posting must be a (code, amount) pair, not {item!r}")
        code, amount = item
        try:
            account_kind(code)
        except ValueError as error:
            raise LedgerError(str(error)) from None
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise LedgerError(f"amount for {code} must be an int, not {type(amount).__name__}")
        if amount == 0:
            raise LedgerError(f"amount for {code} is zero")
        if abs(amount) >= AMOUNT_LIMIT:
            raise LedgerError(f"amount for {code} is not below 2**53 in magnitude")
        if code in seen:
            raise LedgerError(f"account {code} appears twice; sum its amounts into one posting")
        seen[code] = amount
    if not seen:
        raise LedgerError("a transaction needs postings")
    total = sum(seen.values())
    if total != 0:
        raise LedgerError(f"postings sum to {total}, not zero")
    return tuple(sorted(seen.items()))


def content_hash(kind: str, currency: str, postings: Sequence[tuple[str, int]], memo: str) -> str:
    """SHA-256 (hex) of the canonical JSON of a transaction's content, as stored and checked.

    The JSON is `{"currency": C, "kind": K, "memo": M, "postings": [[code, amount], ...]}`
    with postings sorted by code, keys sorted, no spaces, non-ASCII escaped (Python's
    `json.dumps(..., sort_keys=True, separators=(",", ":"))`).
    """
    document = {
        "currency": currency,
        "kind": kind,
        "memo": memo,
        "postings": [[code, amount] for code, amount in sorted(postings)],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# --- posting --------------------------------------------------------------------------------


def _insert(dialect: str, model: type[Any]) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table_of(model))


async def post(
    session: AsyncSession,
    *,
    txid: str,
    kind: str,
    postings: Sequence[tuple[str, int]],
    currency: str,
    memo: str,
    now: datetime,
) -> bool:
    """Post one balanced transaction; True if written, False if this txid is already posted.

    A txid already posted with the same content (kind, currency, postings, memo) is a no-op;
    with other content it raises LedgerConflict and writes nothing. Accounts are created on
    first use. Raises LedgerError for invalid input or an account kept in another currency,
    and Overdraft when a member liability account debited here would end with a debit balance
    (checked after applying, under the account's lock). After any error the caller's
    transaction must be rolled back (see the notes at the top of this module).
    """
    lines = normalized_postings(postings)
    _checked_text("txid", txid, MAX_TXID_LENGTH)
    _checked_text("kind", kind, MAX_KIND_LENGTH)
    _checked_text("memo", memo, MAX_MEMO_LENGTH, empty=True)
    if not is_currency(currency):
        raise LedgerError(f"unknown currency {currency!r}")
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise LedgerError("now must be an aware datetime")
    digest = content_hash(kind, currency, lines, memo)
    codes = [code for code, _ in lines]
    accounts = table_of(LedgerAccount)
    transactions = table_of(LedgerTransaction)

    # An account's currency never changes once created, so reading it before the write lock
    # is safe; an account created meanwhile is checked again from the UPDATE's RETURNING.
    existing = {
        row.code: row.currency
        for row in await session.execute(
            select(accounts.c.code, accounts.c.currency).where(accounts.c.code.in_(codes))
        )
    }
    for code, account_currency in existing.items():
        if account_currency != currency:
            raise LedgerError(f"account {code} is kept in {account_currency}, not {currency}")
    missing = [code for code in codes if code not in existing]
    wanted_members = {m for m in (member_of(code) for code in missing) if m is not None}
    if wanted_members:
        found = set(
            (await session.scalars(select(Member.id).where(Member.id.in_(wanted_members)))).all()
        )
        if wanted_members - found:
            raise LedgerError(f"no member {min(wanted_members - found)}")

    dialect = session.get_bind().dialect.name
    # The first write: it takes SQLite's write lock, and on PostgreSQL it waits for any other
    # transaction inserting the same txid to finish.
    inserted = await session.scalar(
        _insert(dialect, LedgerTransaction)
        .values(txid=txid, kind=kind, content_hash=digest, memo=memo, created_at=now)
        .on_conflict_do_nothing(index_elements=["txid"])
        .returning(transactions.c.id)
    )
    if inserted is None:
        stored = await session.scalar(
            select(transactions.c.content_hash).where(transactions.c.txid == txid)
        )
        if stored == digest:
            return False
        raise LedgerConflict(f"transaction {txid} already exists with different content")

    account_ids: list[int] = []
    for code, amount in lines:  # sorted by code: one lock order for everybody
        if code not in existing:
            await session.execute(
                _insert(dialect, LedgerAccount)
                .values(
                    code=code,
                    kind=account_kind(code),
                    currency=currency,
                    member_id=member_of(code),
                    balance_minor=0,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["code"])
            )
        row = (
            await session.execute(
                update(accounts)
                .where(accounts.c.code == code)
                .values(balance_minor=accounts.c.balance_minor + amount)
                .returning(accounts.c.id, accounts.c.balance_minor, accounts.c.currency)
            )
        ).one()
        if row.currency != currency:
            raise LedgerError(f"account {code} is kept in {row.currency}, not {currency}")
        if amount > 0 and row.balance_minor > 0 and is_member_liability(code):
            raise Overdraft(
                f"{code} would be overdrawn by {row.balance_minor} (debit of {amount} in {txid})"
            )
        account_ids.append(int(row.id))

    await session.execute(
        table_of(LedgerPosting).insert(),
        [
            {"transaction_id": inserted, "account_id": account_id, "amount_minor": amount}
            for account_id, (_, amount) in zip(account_ids, lines, strict=True)
        ],
    )
    return True


# --- reading --------------------------------------------------------------------------------


async def balance(session: AsyncSession, code: str) -> int:
    """The account's debit-positive balance in minor units; 0 for an account not yet used."""
    account_kind(code)
    accounts = table_of(LedgerAccount)
    value = await session.scalar(select(accounts.c.balance_minor).where(accounts.c.code == code))
    return int(value) if value is not None else 0


async def owed_to_member(session: AsyncSession, code: str) -> int:
    """What a liability account says the instance owes (its credit balance, positive)."""
    if account_kind(code) != LIABILITY:
        raise ValueError(f"{code} is not a liability account")
    return -await balance(session, code)


async def member_balances(session: AsyncSession, member_id: int) -> dict[str, int]:
    """What the instance owes one member, by account: wallet, earnings_pending,
    earnings_available and payouts_pending, as positive amounts (0 for unused accounts)."""
    codes = {
        name: _member_code(member_id, suffix) for name, suffix in MEMBER_ACCOUNT_SUFFIXES.items()
    }
    accounts = table_of(LedgerAccount)
    found = {
        row.code: int(row.balance_minor)
        for row in await session.execute(
            select(accounts.c.code, accounts.c.balance_minor).where(
                accounts.c.code.in_(list(codes.values()))
            )
        )
    }
    return {name: -found.get(code, 0) for name, code in codes.items()}


# --- posting many at once -------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One transaction for `post_many`: what `post` takes, less what the batch shares."""

    txid: str
    kind: str
    postings: Sequence[tuple[str, int]]
    memo: str


# Rows per statement parameter list: well under SQLite's 32,766 host parameters.
_IN_CHUNK = 5_000


def _chunked(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def post_many(
    session: AsyncSession, entries: Sequence[Entry], *, currency: str, now: datetime
) -> int:
    """Post many balanced transactions in the caller's database transaction, with the rules of
    `post` (validation, content hash, idempotent txids, LedgerConflict, accounts created on
    first use, no overdraft of a member liability), in a few statements for the whole batch.

    Returns how many were written (txids already posted with the same content are skipped).
    Each account's balance changes once by the batch's sum for it, accounts in code order (the
    lock order of `post`); overdrafts are checked after, so an Overdraft rolls the batch back
    with the caller's transaction. Meant for the month close, which posts one transaction per
    donor: one round trip per row would make it as slow as the number of donors.
    """
    if not is_currency(currency):
        raise LedgerError(f"unknown currency {currency!r}")
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise LedgerError("now must be an aware datetime")
    prepared: dict[str, tuple[Entry, tuple[tuple[str, int], ...], str]] = {}
    for entry in entries:
        lines = normalized_postings(entry.postings)
        _checked_text("txid", entry.txid, MAX_TXID_LENGTH)
        _checked_text("kind", entry.kind, MAX_KIND_LENGTH)
        _checked_text("memo", entry.memo, MAX_MEMO_LENGTH, empty=True)
        if entry.txid in prepared:
            raise LedgerError(f"transaction {entry.txid} appears twice in one batch")
        prepared[entry.txid] = (entry, lines, content_hash(entry.kind, currency, lines, entry.memo))
    if not prepared:
        return 0
    accounts = table_of(LedgerAccount)
    transactions = table_of(LedgerTransaction)
    dialect = session.get_bind().dialect.name

    for txids in _chunked(list(prepared)):
        for txid, stored in await session.execute(
            select(transactions.c.txid, transactions.c.content_hash).where(
                transactions.c.txid.in_(txids)
            )
        ):
            if stored != prepared[txid][2]:
                raise LedgerConflict(f"transaction {txid} already exists with different content")
            del prepared[txid]
    if not prepared:
        return 0

    deltas: dict[str, int] = {}
    for _, lines, _ in prepared.values():
        for code, amount in lines:
            deltas[code] = deltas.get(code, 0) + amount
    codes = sorted(deltas)
    ids: dict[str, int] = {}
    for chunk in _chunked(codes):
        for code, account_id, account_currency in await session.execute(
            select(accounts.c.code, accounts.c.id, accounts.c.currency).where(
                accounts.c.code.in_(chunk)
            )
        ):
            if account_currency != currency:
                raise LedgerError(f"account {code} is kept in {account_currency}, not {currency}")
            ids[code] = int(account_id)
    missing = [code for code in codes if code not in ids]
    if missing:
        wanted_members = sorted({m for m in map(member_of, missing) if m is not None})
        for chunk in _chunked(wanted_members):
            found = set(
                (await session.scalars(select(Member.id).where(Member.id.in_(chunk)))).all()
            )
            if set(chunk) - found:
                raise LedgerError(f"no member {min(set(chunk) - found)}")
        await session.execute(
            _insert(dialect, LedgerAccount).on_conflict_do_nothing(index_elements=["code"]),
            [
                {
                    "code": code,
                    "kind": account_kind(code),
                    "currency": currency,
                    "member_id": member_of(code),
                    "balance_minor": 0,
                    "created_at": now,
                }
                for code in missing
            ],
        )
        for chunk in _chunked(missing):
            for code, account_id, account_currency in await session.execute(
                select(accounts.c.code, accounts.c.id, accounts.c.currency).where(
                    accounts.c.code.in_(chunk)
                )
            ):
                if account_currency != currency:
                    raise LedgerError(
                        f"account {code} is kept in {account_currency}, not {currency}"
                    )
                ids[code] = int(account_id)

    # Balances first, in code order: on PostgreSQL this takes the accounts' row locks in the
    # order `post` takes them, so a concurrent posting never waits for us in a cycle.
    await session.execute(
        update(accounts)
        .where(accounts.c.id == bindparam("account_id"))
        .values(balance_minor=accounts.c.balance_minor + bindparam("delta")),
        [{"account_id": ids[code], "delta": deltas[code]} for code in codes if deltas[code]],
    )
    await session.execute(
        _insert(dialect, LedgerTransaction).on_conflict_do_nothing(index_elements=["txid"]),
        [
            {
                "txid": txid,
                "kind": entry.kind,
                "content_hash": digest,
                "memo": entry.memo,
                "created_at": now,
            }
            for txid, (entry, _, digest) in prepared.items()
        ],
    )
    transaction_ids: dict[str, int] = {}
    for txids in _chunked(list(prepared)):
        for txid, transaction_id in await session.execute(
            select(transactions.c.txid, transactions.c.id).where(transactions.c.txid.in_(txids))
        ):
            transaction_ids[txid] = int(transaction_id)
    await session.execute(
        table_of(LedgerPosting).insert(),
        [
            {
                "transaction_id": transaction_ids[txid],
                "account_id": ids[code],
                "amount_minor": amount,
            }
            for txid, (_, lines, _) in prepared.items()
            for code, amount in lines
        ],
    )
    debited = [ids[code] for code in codes if deltas[code] > 0 and is_member_liability(code)]
    for chunk in _chunked(debited):
        overdrawn = (
            await session.execute(
                select(accounts.c.code, accounts.c.balance_minor)
                .where(accounts.c.id.in_(chunk), accounts.c.balance_minor > 0)
                .order_by(accounts.c.code)
                .limit(1)
            )
        ).first()
        if overdrawn is not None:
            raise Overdraft(f"{overdrawn.code} would be overdrawn by {overdrawn.balance_minor}")
    return len(prepared)
