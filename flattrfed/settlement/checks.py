"""The ledger's invariants (research/clearing.md §2.4), verified from the stored rows.

`check_ledger` reads the ledger and the flattring tables and names every row that breaks one of
these rules (the invariant names start with their number in §2.4):

* 1-double-entry: every transaction has at least two postings, one per account, none zero, and
  they sum to zero.
* 1-currency: every account is kept in the instance currency.
* accounts: every account code is in the chart of accounts (§2.3), and the stored kind and
  member_id are the ones the code implies.
* 2-no-overdraft: no member liability account (wallet, earnings, payouts pending) has a debit
  balance, computed from the postings rather than from the cached balance.
* 2-balance-cache: every account's cached balance_minor equals the sum of its postings.
* 3-conservation: every donor's frozen month close follows flattrfed-split/1 (B = q*n + fee +
  carry with 0 <= carry < n, and the numbers are the rule's for its budget, wallet and fee);
  once its shares are written there are exactly n of q each; once posted, its transaction
  `close:{period}:{donor}` debits the wallet fee + q*n and credits income:fees the fee; no
  share or close transaction lacks its close.
* 4-shares: every share traces to its flattr's Like (same donor, Like and target), which was
  not undone before the cutoff; one share per (donor, target) in a close.
* 4-deposits: every credited deposit request has its transaction `deposit:{reference}` crediting
  the member's wallet with the request's amount; every `deposit:` transaction belongs to a
  credited request.
* 4-payouts: every paid payout request has its transaction `payout:{id}:paid` debiting the
  member's payouts-pending account by the request's amount; every `payout:` transaction belongs
  to a request in the matching state.
* 4-one-flattr: at most one flattr that is not undone per (donor, target, period).
* 4-no-self-flattr: no flattr of a thing owned by the donor.
* 5-unique-txid: no txid is stored twice.
* 7-zero-sum: all postings, and all cached balances, sum to zero.
* 7-cash-backing: what the instance holds and is owed (cash, receivables) covers what it owes
  members and peers (member accounts, payables).
* 9-immutable: every transaction's content hash recomputes from its stored postings and memo,
  so an edited row shows (tamper evidence).
* 10-bounds: every posting amount and every balance is below 2**53 in magnitude.

Not yet applicable, because what they govern does not exist yet: 4 for statement lines and
bank payments (needs statements with peers), 6 (bilateral symmetry, needs statements), 8
(pending before posted, needs settlement with peers: local earnings are backed by cash at once),
and the period lock of 9 (shares carry no time of writing to compare with the close).

Each check is one SQL statement, so each sees one consistent state even while postings go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import String, and_, case, cast, distinct, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.db.models import (
    ClearingRun,
    DepositRequest,
    DonorClose,
    Flattr,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    PayoutRequest,
    Share,
    Thing,
)
from flattrfed.db.statements import table_of
from flattrfed.money import split_budget
from flattrfed.settlement.ledger import (
    AMOUNT_LIMIT,
    ASSET,
    FEES,
    LIABILITY,
    account_kind,
    content_hash,
    deposit_txid,
    member_of,
    payouts_pending,
    wallet,
)

INVARIANTS: Final[Mapping[str, str]] = {
    "1-double-entry": "each transaction has >= 2 non-zero postings, one per account, summing to 0",
    "1-currency": "every account is kept in the instance currency",
    "accounts": "every account code is in the chart; its kind and member_id match the code",
    "2-no-overdraft": "no member liability account has a debit balance (from the postings)",
    "2-balance-cache": "each account's balance_minor equals the sum of its postings",
    "3-conservation": "each donor's close follows flattrfed-split/1: shares + fee + carry = B, "
    "its shares are n times q, and its close transaction debits the wallet fee + q*n",
    "4-shares": "each share traces to its flattr's Like, not undone before the cutoff, "
    "one per (donor, target) per close",
    "4-deposits": "each credited deposit request has its deposit:{reference} transaction",
    "4-payouts": "each paid payout request has its payout:{id}:paid transaction",
    "4-one-flattr": "at most one flattr not undone per (donor, target, period)",
    "4-no-self-flattr": "no flattr of the donor's own thing",
    "5-unique-txid": "no txid is stored twice",
    "7-zero-sum": "all postings and all cached balances sum to zero",
    "7-cash-backing": "cash and receivables cover what is owed to members and peers",
    "9-immutable": "each transaction's content hash recomputes from its stored rows",
    "10-bounds": "every amount and balance is below 2**53 in magnitude",
}

# Past this many problems of one invariant, the rest are counted in one last problem.
PROBLEMS_PER_INVARIANT: Final = 100

_accounts = table_of(LedgerAccount)
_transactions = table_of(LedgerTransaction)
_postings = table_of(LedgerPosting)
_deposits = table_of(DepositRequest)
_payouts = table_of(PayoutRequest)
_flattrs = table_of(Flattr)
_things = table_of(Thing)
_runs = table_of(ClearingRun)
_closes = table_of(DonorClose)
_shares = table_of(Share)

_DEPOSIT_PREFIX = deposit_txid("")
_PAYOUT_PREFIX = "payout:"
_CLOSE_PREFIX = "close:"
# Stages of a month close after which its shares, and its postings, are all written.
_SHARES_WRITTEN = ("shares", "posted", "done")
_POSTED = ("posted", "done")


@dataclass
class Problem:
    """One broken invariant: its name (see INVARIANTS), what is wrong, and the rows at fault."""

    invariant: str
    detail: str
    rows: list[str]


class _Report:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.counts: Counter[str] = Counter()

    def add(self, invariant: str, detail: str, rows: list[str]) -> None:
        assert invariant in INVARIANTS, invariant
        self.counts[invariant] += 1
        if self.counts[invariant] <= PROBLEMS_PER_INVARIANT:
            self.problems.append(Problem(invariant, detail, rows))

    def finish(self) -> list[Problem]:
        for invariant, count in self.counts.items():
            if count > PROBLEMS_PER_INVARIANT:
                more = count - PROBLEMS_PER_INVARIANT
                self.problems.append(Problem(invariant, f"... and {more} more", []))
        return self.problems


def _int(value: Any) -> int:
    # PostgreSQL's SUM over bigint is numeric (a Decimal here); every value is a whole number.
    return 0 if value is None else int(value)


def _posted_sum() -> Any:
    return func.coalesce(func.sum(_postings.c.amount_minor), 0)


async def check_ledger(session: AsyncSession, currency: str) -> list[Problem]:
    """Every broken invariant found, each naming its rows; an empty list when all hold."""
    report = _Report()
    checks: list[Callable[[AsyncSession, _Report, str], Any]] = [
        _double_entry,
        _currency,
        _chart,
        _no_overdraft,
        _balance_cache,
        _unique_txid,
        _immutable,
        _zero_sum,
        _cash_backing,
        _bounds,
        _deposit_trace,
        _payout_trace,
        _flattr_rules,
        _conservation,
        _share_trace,
    ]
    for check in checks:
        await check(session, report, currency)
    return report.finish()


async def _double_entry(session: AsyncSession, report: _Report, _currency: str) -> None:
    count = func.count(_postings.c.id)
    total = _posted_sum()
    accounts = func.count(distinct(_postings.c.account_id))
    zeros = func.sum(case((_postings.c.amount_minor == 0, 1), else_=0))
    query = (
        select(
            _transactions.c.txid,
            count.label("n"),
            total.label("total"),
            accounts.label("accounts"),
            zeros.label("zeros"),
        )
        .select_from(
            _transactions.outerjoin(_postings, _postings.c.transaction_id == _transactions.c.id)
        )
        .group_by(_transactions.c.id, _transactions.c.txid)
        .having(or_(count < 2, total != 0, accounts != count, zeros > 0))
        .order_by(_transactions.c.id)
    )
    for row in await session.execute(query):
        faults = []
        if row.n < 2:
            faults.append(f"has {row.n} posting(s)")
        if _int(row.total) != 0:
            faults.append(f"sums to {_int(row.total)}")
        if row.accounts != row.n:
            faults.append("names an account twice")
        if _int(row.zeros) > 0:
            faults.append("has a zero posting")
        report.add(
            "1-double-entry", f"transaction {row.txid} {', '.join(faults)}", [f"txid={row.txid}"]
        )


async def _currency(session: AsyncSession, report: _Report, currency: str) -> None:
    query = (
        select(_accounts.c.code, _accounts.c.currency)
        .where(_accounts.c.currency != currency)
        .order_by(_accounts.c.code)
    )
    for row in await session.execute(query):
        report.add(
            "1-currency",
            f"account {row.code} is kept in {row.currency}, not {currency}",
            [f"account={row.code}"],
        )


async def _chart(session: AsyncSession, report: _Report, _currency: str) -> None:
    query = select(_accounts.c.code, _accounts.c.kind, _accounts.c.member_id).order_by(
        _accounts.c.code
    )
    async for row in await session.stream(query):
        try:
            kind = account_kind(row.code)
        except ValueError:
            report.add(
                "accounts",
                f"account code {row.code!r} is not in the chart",
                [f"account={row.code}"],
            )
            continue
        if kind != row.kind:
            report.add(
                "accounts",
                f"account {row.code} is stored as {row.kind}, but is {kind}",
                [f"account={row.code}"],
            )
        if member_of(row.code) != row.member_id:
            report.add(
                "accounts",
                f"account {row.code} is stored with member_id {row.member_id}",
                [f"account={row.code}"],
            )


async def _no_overdraft(session: AsyncSession, report: _Report, _currency: str) -> None:
    total = func.sum(_postings.c.amount_minor)
    query = (
        select(_accounts.c.code, total.label("total"))
        .select_from(_accounts.join(_postings, _postings.c.account_id == _accounts.c.id))
        .where(func.substr(_accounts.c.code, 1, 7) == "member:")
        .group_by(_accounts.c.id, _accounts.c.code)
        .having(total > 0)
        .order_by(_accounts.c.code)
    )
    for row in await session.execute(query):
        report.add(
            "2-no-overdraft",
            f"member account {row.code} has a debit balance of {_int(row.total)} "
            "(the member would owe the instance)",
            [f"account={row.code}"],
        )


async def _balance_cache(session: AsyncSession, report: _Report, _currency: str) -> None:
    total = _posted_sum()
    query = (
        select(_accounts.c.code, _accounts.c.balance_minor, total.label("total"))
        .select_from(_accounts.outerjoin(_postings, _postings.c.account_id == _accounts.c.id))
        .group_by(_accounts.c.id, _accounts.c.code, _accounts.c.balance_minor)
        .having(_accounts.c.balance_minor != total)
        .order_by(_accounts.c.code)
    )
    for row in await session.execute(query):
        report.add(
            "2-balance-cache",
            f"account {row.code} caches balance {row.balance_minor}, "
            f"but its postings sum to {_int(row.total)}",
            [f"account={row.code}"],
        )


async def _unique_txid(session: AsyncSession, report: _Report, _currency: str) -> None:
    count = func.count(_transactions.c.id)
    query = (
        select(_transactions.c.txid, count.label("n"))
        .group_by(_transactions.c.txid)
        .having(count > 1)
        .order_by(_transactions.c.txid)
    )
    for row in await session.execute(query):
        report.add(
            "5-unique-txid", f"txid {row.txid} is stored {row.n} times", [f"txid={row.txid}"]
        )


async def _immutable(session: AsyncSession, report: _Report, currency: str) -> None:
    query = (
        select(
            _transactions.c.id,
            _transactions.c.txid,
            _transactions.c.kind,
            _transactions.c.memo,
            _transactions.c.content_hash,
            _accounts.c.code,
            _accounts.c.currency,
            _postings.c.amount_minor,
        )
        .select_from(
            _transactions.outerjoin(
                _postings, _postings.c.transaction_id == _transactions.c.id
            ).outerjoin(_accounts, _accounts.c.id == _postings.c.account_id)
        )
        .order_by(_transactions.c.id, _postings.c.id)
    )
    current: Any = None
    lines: list[tuple[str, int]] = []
    currencies: set[str] = set()

    def finish() -> None:
        if current is None:
            return
        # Hashed with the currency its accounts are kept in; a mixed one is 1-currency's to name.
        kept_in = next(iter(currencies)) if len(currencies) == 1 else currency
        if content_hash(current.kind, kept_in, lines, current.memo) != current.content_hash:
            report.add(
                "9-immutable",
                f"transaction {current.txid} does not match its content hash "
                "(a posting, its memo or its kind was changed after posting)",
                [f"txid={current.txid}"],
            )

    async for row in await session.stream(query):
        if current is None or row.id != current.id:
            finish()
            current, lines, currencies = row, [], set()
        if row.code is not None:
            lines.append((row.code, int(row.amount_minor)))
            currencies.add(row.currency)
    finish()


async def _zero_sum(session: AsyncSession, report: _Report, _currency: str) -> None:
    posted = _int(await session.scalar(select(_posted_sum())))
    if posted != 0:
        report.add("7-zero-sum", f"all postings sum to {posted}, not zero", [])
    cached = _int(
        await session.scalar(select(func.coalesce(func.sum(_accounts.c.balance_minor), 0)))
    )
    if cached != 0:
        report.add("7-zero-sum", f"all cached balances sum to {cached}, not zero", [])


async def _cash_backing(session: AsyncSession, report: _Report, _currency: str) -> None:
    total = _posted_sum()
    query = (
        select(_accounts.c.code, total.label("total"))
        .select_from(_accounts.outerjoin(_postings, _postings.c.account_id == _accounts.c.id))
        .group_by(_accounts.c.id, _accounts.c.code)
    )
    held = owed = 0
    async for row in await session.stream(query):
        try:
            kind = account_kind(row.code)
        except ValueError:
            continue  # named by the `accounts` check
        if kind == ASSET:
            held += _int(row.total)
        elif kind == LIABILITY:
            owed -= _int(row.total)
    if held < owed:
        report.add(
            "7-cash-backing",
            f"the instance owes members and peers {owed} but holds and is owed only {held}",
            [],
        )


async def _bounds(session: AsyncSession, report: _Report, _currency: str) -> None:
    amount = _postings.c.amount_minor
    query = (
        select(_transactions.c.txid, _accounts.c.code, amount)
        .select_from(
            _postings.join(_transactions, _transactions.c.id == _postings.c.transaction_id).join(
                _accounts, _accounts.c.id == _postings.c.account_id
            )
        )
        .where(or_(amount >= AMOUNT_LIMIT, amount <= -AMOUNT_LIMIT))
        .order_by(_postings.c.id)
    )
    for row in await session.execute(query):
        report.add(
            "10-bounds",
            f"posting of {row.amount_minor} to {row.code} in {row.txid} is not below 2**53",
            [f"txid={row.txid}", f"account={row.code}"],
        )
    cached = _accounts.c.balance_minor
    balances = (
        select(_accounts.c.code, cached)
        .where(or_(cached >= AMOUNT_LIMIT, cached <= -AMOUNT_LIMIT))
        .order_by(_accounts.c.code)
    )
    for account in await session.execute(balances):
        report.add(
            "10-bounds",
            f"balance {account.balance_minor} of {account.code} is not below 2**53",
            [f"account={account.code}"],
        )


def _deposit_row(row: Any) -> str:
    return f"deposit_request={row.id} (reference {row.reference})"


async def _deposit_trace(session: AsyncSession, report: _Report, _currency: str) -> None:
    txid = literal(_DEPOSIT_PREFIX, String) + _deposits.c.reference
    query = (
        select(
            _deposits.c.id,
            _deposits.c.reference,
            _deposits.c.member_id,
            _deposits.c.amount_minor.label("requested"),
            _transactions.c.id.label("transaction_id"),
            _accounts.c.code,
            _postings.c.amount_minor,
        )
        .select_from(
            _deposits.outerjoin(_transactions, _transactions.c.txid == txid)
            .outerjoin(_postings, _postings.c.transaction_id == _transactions.c.id)
            .outerjoin(_accounts, _accounts.c.id == _postings.c.account_id)
        )
        .where(_deposits.c.state == "credited")
        .order_by(_deposits.c.id, _postings.c.id)
    )
    credited: dict[int, tuple[Any, dict[str, int]]] = {}
    async for row in await session.stream(query):
        request, lines = credited.setdefault(row.id, (row, {}))
        if row.code is not None:
            lines[row.code] = int(row.amount_minor)
    for request, lines in credited.values():
        name = deposit_txid(request.reference)
        if request.transaction_id is None:
            report.add(
                "4-deposits",
                f"credited deposit request {request.id} has no transaction {name}",
                [_deposit_row(request)],
            )
            continue
        credit = -lines.get(wallet(request.member_id), 0)
        if request.requested is None or credit != request.requested:
            report.add(
                "4-deposits",
                f"transaction {name} credits {wallet(request.member_id)} with {credit}, "
                f"but the deposit request is for {request.requested}",
                [_deposit_row(request), f"txid={name}"],
            )

    orphans = (
        select(_transactions.c.txid, _deposits.c.id, _deposits.c.state)
        .select_from(_transactions.outerjoin(_deposits, _transactions.c.txid == txid))
        .where(
            func.substr(_transactions.c.txid, 1, len(_DEPOSIT_PREFIX)) == _DEPOSIT_PREFIX,
            or_(_deposits.c.id.is_(None), _deposits.c.state != "credited"),
        )
        .order_by(_transactions.c.id)
    )
    for orphan in await session.execute(orphans):
        state = (
            "there is no such deposit request"
            if orphan.id is None
            else f"deposit request {orphan.id} is {orphan.state}"
        )
        report.add(
            "4-deposits",
            f"transaction {orphan.txid} credits a deposit, but {state}",
            [f"txid={orphan.txid}"],
        )


async def _payout_trace(session: AsyncSession, report: _Report, _currency: str) -> None:
    txid = literal(_PAYOUT_PREFIX, String) + cast(_payouts.c.id, String) + literal(":paid", String)
    query = (
        select(
            _payouts.c.id,
            _payouts.c.member_id,
            _payouts.c.amount_minor.label("requested"),
            _transactions.c.id.label("transaction_id"),
            _accounts.c.code,
            _postings.c.amount_minor,
        )
        .select_from(
            _payouts.outerjoin(_transactions, _transactions.c.txid == txid)
            .outerjoin(_postings, _postings.c.transaction_id == _transactions.c.id)
            .outerjoin(_accounts, _accounts.c.id == _postings.c.account_id)
        )
        .where(_payouts.c.state == "paid")
        .order_by(_payouts.c.id, _postings.c.id)
    )
    paid: dict[int, tuple[Any, dict[str, int]]] = {}
    async for row in await session.stream(query):
        request, lines = paid.setdefault(row.id, (row, {}))
        if row.code is not None:
            lines[row.code] = int(row.amount_minor)
    for request, lines in paid.values():
        name = f"{_PAYOUT_PREFIX}{request.id}:paid"
        if request.transaction_id is None:
            report.add(
                "4-payouts",
                f"paid payout request {request.id} has no transaction {name}",
                [f"payout_request={request.id}"],
            )
            continue
        account = payouts_pending(request.member_id)
        debit = lines.get(account, 0)
        if debit != request.requested:
            report.add(
                "4-payouts",
                f"transaction {name} debits {account} by {debit}, "
                f"but the payout request is for {request.requested}",
                [f"payout_request={request.id}", f"txid={name}"],
            )

    # Every payout:{id}:{step} transaction must belong to a request in the matching state.
    states = {
        row.id: row.state for row in await session.execute(select(_payouts.c.id, _payouts.c.state))
    }
    wanted = {"requested": None, "paid": "paid", "cancelled": "cancelled"}
    query_txids = (
        select(_transactions.c.txid)
        .where(func.substr(_transactions.c.txid, 1, len(_PAYOUT_PREFIX)) == _PAYOUT_PREFIX)
        .order_by(_transactions.c.id)
    )
    for (name,) in await session.execute(query_txids):
        _, _, rest = name.partition(":")
        number, _, step = rest.partition(":")
        if not number.isdigit() or step not in wanted:
            report.add("4-payouts", f"transaction {name} is not payout:ID:STEP", [f"txid={name}"])
            continue
        state = states.get(int(number))
        if state is None:
            report.add(
                "4-payouts",
                f"transaction {name} is for payout request {number}, which does not exist",
                [f"txid={name}"],
            )
        elif wanted[step] is not None and state != wanted[step]:
            report.add(
                "4-payouts",
                f"transaction {name} is for payout request {number}, which is {state}",
                [f"txid={name}", f"payout_request={number}"],
            )


async def _flattr_rules(session: AsyncSession, report: _Report, _currency: str) -> None:
    other = _flattrs.alias("other")
    duplicates = (
        select(_flattrs.c.id, _flattrs.c.donor_id, _flattrs.c.target_uri, _flattrs.c.period)
        .where(
            _flattrs.c.undone_at.is_(None),
            exists().where(
                and_(
                    other.c.donor_id == _flattrs.c.donor_id,
                    other.c.target_uri == _flattrs.c.target_uri,
                    other.c.period == _flattrs.c.period,
                    other.c.undone_at.is_(None),
                    other.c.id != _flattrs.c.id,
                )
            ),
        )
        .order_by(_flattrs.c.donor_id, _flattrs.c.target_uri, _flattrs.c.period, _flattrs.c.id)
    )
    groups: dict[tuple[int, str, str], list[int]] = {}
    for row in await session.execute(duplicates):
        groups.setdefault((row.donor_id, row.target_uri, row.period), []).append(row.id)
    for (donor, target, period), ids in groups.items():
        report.add(
            "4-one-flattr",
            f"member {donor} flattred {target} {len(ids)} times in {period}",
            [f"flattr={flattr_id}" for flattr_id in ids],
        )

    own = (
        select(_flattrs.c.id, _flattrs.c.donor_id, _flattrs.c.thing_id)
        .select_from(_flattrs.join(_things, _things.c.id == _flattrs.c.thing_id))
        .where(_things.c.owner_id == _flattrs.c.donor_id)
        .order_by(_flattrs.c.id)
    )
    for flattr in await session.execute(own):
        report.add(
            "4-no-self-flattr",
            f"member {flattr.donor_id} flattred their own thing {flattr.thing_id}",
            [f"flattr={flattr.id}", f"thing={flattr.thing_id}"],
        )


async def _conservation(session: AsyncSession, report: _Report, _currency: str) -> None:
    runs = {
        row.id: row
        for row in await session.execute(
            select(_runs.c.id, _runs.c.period, _runs.c.stage, _runs.c.fee_bp)
        )
    }
    shares = {
        (row.run_id, row.donor_id): row
        for row in await session.execute(
            select(
                _shares.c.run_id,
                _shares.c.donor_id,
                func.count(_shares.c.id).label("n"),
                func.min(_shares.c.amount_minor).label("low"),
                func.max(_shares.c.amount_minor).label("high"),
            ).group_by(_shares.c.run_id, _shares.c.donor_id)
        )
    }
    posted: dict[str, dict[str, int]] = {}
    close_postings = (
        select(_transactions.c.txid, _accounts.c.code, _postings.c.amount_minor)
        .select_from(
            _transactions.join(_postings, _postings.c.transaction_id == _transactions.c.id).join(
                _accounts, _accounts.c.id == _postings.c.account_id
            )
        )
        .where(func.substr(_transactions.c.txid, 1, len(_CLOSE_PREFIX)) == _CLOSE_PREFIX)
    )
    async for row in await session.stream(close_postings):
        posted.setdefault(row.txid, {})[row.code] = int(row.amount_minor)

    closes = select(_closes).order_by(_closes.c.run_id, _closes.c.donor_id)
    async for close in await session.stream(closes):
        run = runs[close.run_id]
        name = f"donor_close={close.id}"
        about = f"the close of member {close.donor_id} for {run.period}"
        n, q, fee, carry = close.things, close.share_minor, close.fee_minor, close.carry_minor
        if close.spent_minor != q * n + fee + carry or not (0 <= carry < max(n, 1)):
            report.add(
                "3-conservation",
                f"{about}: shares {q}x{n} + fee {fee} + carry {carry} "
                f"is not B = {close.spent_minor} (with 0 <= carry < n)",
                [name],
            )
            continue
        try:
            split = split_budget(close.budget_minor, max(close.wallet_minor, 0), run.fee_bp, n)
        except (TypeError, ValueError) as error:
            report.add("3-conservation", f"{about}: {error}", [name])
            continue
        frozen = (close.spent_minor, fee, q, carry)
        rule = (split.spent_minor, split.fee_minor, split.share_minor, split.carry_minor)
        if frozen != rule:
            report.add(
                "3-conservation",
                f"{about} froze (B, fee, q, carry) = {frozen}, but flattrfed-split/1 gives {rule}",
                [name],
            )
        got = shares.pop((close.run_id, close.donor_id), None)
        count, low, high = (got.n, got.low, got.high) if got is not None else (0, q, q)
        if run.stage in _SHARES_WRITTEN and (count != n or not low == high == q):
            report.add(
                "3-conservation",
                f"{about} has {count} shares of {low} to {high}, not {n} shares of {q}",
                [name],
            )
        debit = fee + q * n
        if run.stage in _POSTED and debit:
            txid = f"{_CLOSE_PREFIX}{run.period}:{close.donor_id}"
            lines = posted.pop(txid, None)
            if lines is None:
                report.add("3-conservation", f"{about} has no transaction {txid}", [name])
            elif lines.get(wallet(close.donor_id)) != debit or -lines.get(FEES, 0) != fee:
                report.add(
                    "3-conservation",
                    f"transaction {txid} debits the wallet {lines.get(wallet(close.donor_id))} "
                    f"and credits fees {-lines.get(FEES, 0)}, not fee + q*n = {debit} "
                    f"and fee {fee}",
                    [name, f"txid={txid}"],
                )
    for (run_id, donor_id), row in sorted(shares.items()):
        report.add(
            "3-conservation",
            f"member {donor_id} has {row.n} shares in the close of {runs[run_id].period} "
            "but no frozen split",
            [f"clearing_run={run_id}"],
        )
    for txid in sorted(posted):
        report.add(
            "3-conservation", f"transaction {txid} belongs to no posted close", [f"txid={txid}"]
        )


async def _share_trace(session: AsyncSession, report: _Report, _currency: str) -> None:
    mismatched = (
        select(
            _shares.c.id,
            _shares.c.flattr_id,
            _runs.c.period,
            (_shares.c.donor_id != _flattrs.c.donor_id).label("donor"),
            (_shares.c.like_uri != _flattrs.c.like_uri).label("like"),
            (_shares.c.target_uri != _flattrs.c.target_uri).label("target"),
            and_(_flattrs.c.undone_at.is_not(None), _flattrs.c.undone_at < _runs.c.cutoff).label(
                "undone"
            ),
        )
        .select_from(
            _shares.join(_flattrs, _flattrs.c.id == _shares.c.flattr_id).join(
                _runs, _runs.c.id == _shares.c.run_id
            )
        )
        .where(
            or_(
                _shares.c.donor_id != _flattrs.c.donor_id,
                _shares.c.like_uri != _flattrs.c.like_uri,
                _shares.c.target_uri != _flattrs.c.target_uri,
                and_(_flattrs.c.undone_at.is_not(None), _flattrs.c.undone_at < _runs.c.cutoff),
            )
        )
        .order_by(_shares.c.id)
    )
    for row in await session.execute(mismatched):
        faults = [
            text
            for flag, text in (
                (row.donor, "another donor"),
                (row.like, "another Like"),
                (row.target, "another target"),
                (row.undone, "a Like undone before the cutoff"),
            )
            if flag
        ]
        report.add(
            "4-shares",
            f"share {row.id} of {row.period} traces to {', '.join(faults)}",
            [f"share={row.id}", f"flattr={row.flattr_id}"],
        )
    count = func.count(_shares.c.id)
    doubled = (
        select(_shares.c.run_id, _shares.c.donor_id, _shares.c.target_uri, count.label("n"))
        .group_by(_shares.c.run_id, _shares.c.donor_id, _shares.c.target_uri)
        .having(count > 1)
        .order_by(_shares.c.run_id, _shares.c.donor_id, _shares.c.target_uri)
    )
    for row in await session.execute(doubled):
        report.add(
            "4-shares",
            f"member {row.donor_id} has {row.n} shares for {row.target_uri} in one close",
            [f"clearing_run={row.run_id}"],
        )
