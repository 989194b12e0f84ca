"""Statement exchange between instance actors: issue after the close, verify on receipt, net.

Messages (all between instance actors, HTTP-signed, documents carrying FEP-8b32 proofs):
`Offer{SettlementStatement}` → `Accept|Reject{StatementResponse}`; when both directions of a
pair and period are accepted, each side computes the same `BilateralSettlement` (net, payer,
payee, threshold/carry, payment reference). Payment is recorded by the payer's admin and
confirmed by the payee's admin (`PaymentNotice` / `PaymentConfirmation` in an `Update`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterable, Iterable
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import ensure_instance_actor
from flattrfed.activitypub.client import FederationClient, FetchError
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.dispatch import Dispatcher, Ignored, Inbound
from flattrfed.activitypub.documents import AS_CONTEXT, FLATTR_TERMS, iso
from flattrfed.activitypub.keys import KeyResolver, KeyUnavailable
from flattrfed.activitypub.origins import BadUri, host_of
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.config import Settings
from flattrfed.db.models import (
    ClearingRun,
    InboundActivity,
    LocalActor,
    Member,
    Peer,
    ProofKey,
    Settlement,
    SettlementEvent,
    Share,
    Statement,
    StatementLine,
    Thing,
)
from flattrfed.db.session import Database
from flattrfed.periods import Period
from flattrfed.settlement import ledger, pages, proofs, verification
from flattrfed.settlement import statements as st
from flattrfed.settlement.canonical import sha256_digest
from flattrfed.worker import RetryLater

log = logging.getLogger(__name__)

PAYMENT_DEADLINE = timedelta(days=14)
ISSUE_RETRY = timedelta(hours=1)
MAX_REVISIONS = 3
CREDIT_LIMIT = "CREDIT_LIMIT_EXCEEDED"
WAITING = "waiting"
DEFAULT_THRESHOLD_MINOR = 0
MAX_DISPUTE_REASON = 500


class ExchangeError(ValueError):
    """A settlement action an admin asked for cannot be done; the message says why."""


def pair_id(period: str, first: str, second: str) -> str:
    low, high = sorted([first, second])
    return f"{period}:{low}~{high}"


def payment_reference(period: str, first: str, second: str) -> str:
    """What the payer writes in the bank transfer so the payee can match it (same on both sides)."""
    digest = hashlib.sha256(pair_id(period, first, second).encode()).hexdigest()[:10].upper()
    return f"FF-{period}-{digest}"


class SettlementExchange:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: Settings,
        urls: LocalUrls,
        client: FederationClient,
        keys: KeyResolver,
    ) -> None:
        self.database = database
        self.clock = clock
        self.settings = settings
        self.urls = urls
        self.client = client
        self.keys = keys
        self.host = settings.host
        self.grace = timedelta(hours=settings.close_grace_hours)

    def register(self, dispatcher: Dispatcher) -> None:
        dispatcher.register("Offer:SettlementStatement", self.on_statement)
        dispatcher.register("Accept:StatementResponse", self.on_response)
        dispatcher.register("Reject:StatementResponse", self.on_response)
        dispatcher.register("Update:PaymentNotice", self.on_payment_notice)
        dispatcher.register("Update:PaymentConfirmation", self.on_payment_confirmation)
        dispatcher.register("Update:PaymentDispute", self.on_payment_dispute)

    @property
    def actor_uri(self) -> str:
        return self.urls.actor("instance", "")

    # --- our Ed25519 proof key -----------------------------------------------------------

    async def proof_key(self, session: AsyncSession) -> proofs.ProofKey:
        actor = await ensure_instance_actor(session, self.urls, self.clock.now())
        row = await session.scalar(
            select(ProofKey)
            .where(ProofKey.actor_id == actor.id, ProofKey.retired_at.is_(None))
            .order_by(ProofKey.id.desc())
            .limit(1)
        )
        if row is None:
            key = proofs.generate_ed25519_key()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            row = ProofKey(
                actor_id=actor.id,
                private_key_pem=pem,
                multikey=proofs.multikey_from_public(key.public_key()),
                created_at=self.clock.now(),
            )
            session.add(row)
            await session.flush()
        private = serialization.load_pem_private_key(row.private_key_pem.encode(), None)
        assert isinstance(private, Ed25519PrivateKey)
        return proofs.ProofKey(f"{self.actor_uri}#ed25519-key", private)

    async def _peer_key(self, verification_method: str, issuer: str) -> Ed25519PublicKey | None:
        """A peer instance actor's proof key, from its own actor document (`assertionMethod`)."""
        if verification_method.split("#", 1)[0] != issuer:
            return None
        try:
            document = await self.client.fetch_activitypub(
                issuer, signer=await self.keys.instance_signer()
            )
        except FetchError as error:
            if not error.permanent:
                # The issuer is briefly unreachable: try the whole message again later rather
                # than ignore a genuine statement for good.
                raise RetryLater(f"issuer unreachable: {error.reason}", after=ISSUE_RETRY) from None
            return None
        methods = document.get("assertionMethod")
        for method in methods if isinstance(methods, list) else []:
            if (
                isinstance(method, dict)
                and method.get("id") == verification_method
                and method.get("controller") == issuer
                and isinstance(method.get("publicKeyMultibase"), str)
            ):
                try:
                    return proofs.public_from_multikey(method["publicKeyMultibase"])
                except ValueError:
                    return None
        return None

    async def _verify_proof(self, document: dict[str, Any], issuer: str) -> None:
        keys: dict[str, Ed25519PublicKey | None] = {}
        raw = document.get("proof")
        for proof in raw if isinstance(raw, list) else [raw]:
            method = proof.get("verificationMethod") if isinstance(proof, dict) else None
            if isinstance(method, str):
                keys[method] = await self._peer_key(method, issuer)
        try:
            proofs.verify_document(document, lambda method: keys.get(method))
        except proofs.ProofError as error:
            raise Ignored(f"statement proof does not verify: {error.reason}") from None

    # --- issuing ---------------------------------------------------------------------------

    async def issue_statements(self, period: Period) -> list[str]:
        """After the close: one signed statement per peer, queued as an Offer (idempotent)."""
        async with self.database.sessions() as session:
            run = await session.scalar(select(ClearingRun).where(ClearingRun.period == str(period)))
            if run is None or run.stage != "done":
                raise ExchangeError(f"{period} is not closed yet")
            peers = (await session.scalars(select(Peer).order_by(Peer.host))).all()
        issued: list[str] = []
        unreachable: list[str] = []
        for peer in peers:
            try:
                remote = await self.keys.actor(peer.clearing_actor)
            except KeyUnavailable as error:
                log.warning(
                    "cannot reach a peer's clearing actor",
                    extra={"peer": peer.host, "reason": error.reason},
                )
                unreachable.append(peer.host)
                continue
            uri = await self._issue_one(period, run, peer, remote.inbox)
            if uri is not None:
                issued.append(uri)
        if unreachable:
            # The close's work row is retried; the close is done and issued statements are
            # skipped, so only the peers that were down get theirs (the instance may be down
            # for days: deliveries retry for about three, and so does this).
            raise RetryLater(f"peers unreachable: {', '.join(unreachable)}", after=ISSUE_RETRY)
        return issued

    async def _issue_one(
        self, period: Period, run: ClearingRun, peer: Peer, inbox: str
    ) -> str | None:
        now = self.clock.now()
        async with self.database.transaction() as session:
            earlier = (
                await session.scalars(
                    select(Statement)
                    .where(
                        Statement.direction == "out",
                        Statement.period == str(period),
                        Statement.peer_host == peer.host,
                    )
                    .order_by(Statement.revision)
                )
            ).all()
            if any(row.state in {"issued", "accepted"} for row in earlier):
                return None
            if len(earlier) >= MAX_REVISIONS:
                log.warning(
                    "statement rejected too often; an admin must look",
                    extra={"peer": peer.host, "period": str(period)},
                )
                return None
            revision = len(earlier) + 1
            # Lines the peer disputed before are left out: their money went back to the donors.
            excluded: set[str] = set()
            for row in earlier:
                excluded |= st.disputed_like_ids(row.response or {})
            shares = (
                await session.execute(
                    select(Share, Member.username)
                    .join(Member, Member.id == Share.donor_id)
                    .where(Share.run_id == run.id, Share.payee_host == peer.host)
                    .where(Share.amount_minor > 0)
                )
            ).all()
            lines = [
                st.Line(
                    share.like_uri,
                    self.urls.actor("person", name),
                    # What the receiver got the Like for: the thing, or a claimant member.
                    share.payee_uri,
                    share.amount_minor,
                )
                for share, name in shares
                if share.like_uri not in excluded
            ]
            uri = st.statement_id(self.settings.base_url, str(period), peer.host, revision)
            previous = (
                st.statement_id(self.settings.base_url, str(period), peer.host, revision - 1)
                if revision > 1
                else None
            )
            document, line_pages = st.build_paged_statement(
                issuer=self.actor_uri,
                counterparty=peer.clearing_actor,
                statement_uri=uri,
                revision=revision,
                supersedes=previous,
                period=str(period),
                currency=run.currency,
                fee_bp=run.fee_bp,
                lines=lines,
                issued=now,
                threshold_minor=self.settings.settlement_threshold_minor,
            )
            signed = proofs.sign_document(document, await self.proof_key(session), now)
            row = Statement(
                uri=uri,
                direction="out",
                period=str(period),
                peer_host=peer.host,
                revision=revision,
                digest=st.statement_digest(signed),
                document=signed,
                total_minor=sum(line.amount_minor for line in lines),
                line_count=len(lines),
                state="issued",
                created_at=now,
            )
            session.add(row)
            await session.flush()
            # Kept line by line with their page: the peer fetches pages 2.. from us.
            await store_statement_lines(session, row.id, line_pages)
            offer = {
                "@context": [AS_CONTEXT, FLATTR_TERMS],
                "id": f"{uri}/offer",
                "type": "Offer",
                "actor": self.actor_uri,
                "to": [peer.clearing_actor],
                "object": signed,
            }
            actor = await ensure_instance_actor(session, self.urls, now)
            await enqueue_delivery(
                session, activity=offer, actor_id=actor.id, inboxes=[inbox], now=now
            )
        return uri

    async def statement_page(self, uri: str, number: int) -> tuple[str, dict[str, Any]] | None:
        """Page `number` of a statement we issued, and the actor allowed to read it (the
        counterparty); None if there is no such statement or page."""
        async with self.database.sessions() as session:
            statement = await session.scalar(
                select(Statement).where(Statement.uri == uri, Statement.direction == "out")
            )
            if statement is None or not 1 <= number <= int(
                statement.document["totals"].get("pages", 1)
            ):
                return None
            rows = (
                await session.execute(
                    select(
                        StatementLine.like_uri,
                        StatementLine.donor_uri,
                        StatementLine.object_uri,
                        StatementLine.amount_minor,
                    )
                    .where(StatementLine.statement_id == statement.id, StatementLine.page == number)
                    .order_by(StatementLine.position)
                )
            ).all()
        items = [st.line_document(st.Line(*row)) for row in rows]
        document = pages.page_document(statement.document, number, items)
        return str(statement.document["counterparty"]), document

    # --- receiving a statement ---------------------------------------------------------------

    async def _peer_of(self, actor_uri: str) -> Peer:
        try:
            host = host_of(actor_uri, allow_http=self.settings.allow_http)
        except BadUri:
            raise Ignored("bad actor") from None
        async with self.database.sessions() as session:
            peer = await session.scalar(select(Peer).where(Peer.host == host))
        if peer is None or peer.clearing_actor != actor_uri:
            raise Ignored("settlement message from an instance we are not peered with")
        return peer

    async def on_statement(self, inbound: Inbound) -> str:
        try:
            peer = await self._peer_of(inbound.actor_uri)
        except Ignored:
            # Kept, not dropped: it is processed when an admin peers with the sender.
            return f"{WAITING}: the sender is not peered with this instance"
        document = inbound.object
        assert isinstance(document, dict)
        if document.get("issuer") != inbound.actor_uri or document.get("counterparty") != (
            self.actor_uri
        ):
            raise Ignored("statement issuer or counterparty does not match the sender and us")
        await self._verify_proof(document, inbound.actor_uri)
        uri, period_text = document.get("id"), document.get("period")
        revision = document.get("revision")
        if (
            not isinstance(uri, str)
            or not isinstance(period_text, str)
            or not isinstance(revision, int)
        ):
            raise Ignored("statement without id, period or revision")
        try:
            period = Period.parse(period_text)
        except ValueError:
            raise Ignored("statement with a bad period") from None
        digest = st.statement_digest(document)
        now = self.clock.now()
        async with self.database.sessions() as session:
            known = await session.scalar(select(Statement).where(Statement.uri == uri))
        if known is not None:
            if known.digest != digest:
                log.error(
                    "equivocation: a statement id arrived with other content",
                    extra={"statement": uri, "peer": peer.host},
                )
                return "ignored: equivocation (same statement id, other content)"
            return "ignored: statement already received"
        if now < period.end:
            return "ignored: a statement for a month that has not ended"
        async with self.database.sessions() as session:
            settled = await session.scalar(
                select(Statement.uri).where(
                    Statement.direction == "in",
                    Statement.period == str(period),
                    Statement.peer_host == peer.host,
                    Statement.state == "accepted",
                )
            )
        if settled is not None:
            # A later revision may only replace a rejected one: never book a month twice.
            return f"ignored: {settled} was already accepted for {period}"
        spool = await self._collect_pages(document)
        try:
            return await self._answer(inbound, peer, document, period, digest, spool)
        finally:
            spool.close()

    async def _collect_pages(self, document: dict[str, Any]) -> pages.LineSpool:
        """Every page of the statement, fetched before any transaction is opened."""
        try:
            return await pages.collect(
                self.client,
                await self.keys.instance_signer(),
                document,
                allow_http=self.settings.allow_http,
            )
        except pages.PageError as error:
            if error.permanent:
                raise Ignored(f"statement pages: {error.reason}") from None
            # Not accepted, not stored: the whole Offer is tried again, like a statement whose
            # issuer is briefly down.
            raise RetryLater(f"statement pages: {error.reason}", after=ISSUE_RETRY) from None

    async def _answer(
        self,
        inbound: Inbound,
        peer: Peer,
        document: dict[str, Any],
        period: Period,
        digest: str,
        spool: pages.LineSpool,
    ) -> str:
        """Verify the statement, store it with our signed answer, and queue the answer."""
        uri, revision, now = str(document["id"]), int(document["revision"]), self.clock.now()
        verdict = await self._verify_against_likes(document, peer, period, spool.pages())
        if verdict.accepted:
            verdict = await self._within_credit_limit(spool, peer, verdict)
        response_uri = (
            f"{self.settings.base_url}/settlement/{period}/responses/"
            f"{hashlib.sha256(uri.encode()).hexdigest()[:32]}"
        )
        response = st.response_document(
            statement=document,
            responder=self.actor_uri,
            response_uri=response_uri,
            verdict=verdict,
            issued=now,
        )
        # Network first, then one short transaction (never fetch while holding it open).
        remote_inbox = await self._inbox_of(inbound.actor_uri)
        async with self.database.transaction() as session:
            signed = proofs.sign_document(response, await self.proof_key(session), now)
            statement = Statement(
                uri=uri,
                direction="in",
                period=str(period),
                peer_host=peer.host,
                revision=revision,
                digest=digest,
                document=document,
                total_minor=verdict.accepted_minor,
                line_count=int(document["totals"]["lines"]) if verdict.accepted else 0,
                state="accepted" if verdict.accepted else "rejected",
                response=signed,
                created_at=now,
                responded_at=now,
            )
            session.add(statement)
            await session.flush()
            if verdict.accepted:
                await store_statement_lines(session, statement.id, spool.pages())
                await self._book_accepted_incoming(session, statement, peer)
            answer = {
                "@context": [AS_CONTEXT, FLATTR_TERMS],
                "id": f"{response_uri}/activity",
                "type": "Accept" if verdict.accepted else "Reject",
                "actor": self.actor_uri,
                "to": [inbound.actor_uri],
                "object": signed,
            }
            actor = await ensure_instance_actor(session, self.urls, now)
            await enqueue_delivery(
                session, activity=answer, actor_id=actor.id, inboxes=[remote_inbox], now=now
            )
        await self.try_settle(str(period), peer.host)
        return f"statement {'accepted' if verdict.accepted else 'rejected'}"

    async def process_waiting(self, host: str) -> list[str]:
        """After peering with `host`: statements it sent while unpeered are verified now."""
        async with self.database.sessions() as session:
            rows = (
                await session.scalars(
                    select(InboundActivity)
                    .where(
                        InboundActivity.type == "Offer",
                        InboundActivity.outcome.like(f"{WAITING}%"),
                    )
                    .order_by(InboundActivity.id)
                )
            ).all()
        outcomes: list[str] = []
        for row in rows:
            try:
                if host_of(row.actor_uri, allow_http=self.settings.allow_http) != host:
                    continue
            except BadUri:
                continue
            inbound = Inbound(row.id, row.payload, row.actor_uri, row.type)
            try:
                outcome = await self.on_statement(inbound)
            except Ignored as why:
                outcome = f"ignored: {why}"
            except RetryLater as why:
                # The issuer (or its pages) cannot be reached now: the statement keeps waiting.
                outcome = f"{WAITING}: {why}"
            async with self.database.transaction() as session:
                stored = await session.get(InboundActivity, row.id)
                assert stored is not None
                stored.outcome = outcome[:255]
            outcomes.append(outcome)
        return outcomes

    async def _within_credit_limit(
        self, spool: pages.LineSpool, peer: Peer, verdict: st.Verdict
    ) -> st.Verdict:
        """Refuse a statement that would let the peer owe us more than its credit limit."""
        async with self.database.sessions() as session:
            exposure = await ledger.balance(session, ledger.peer_receivable(peer.host))
            exposure += await ledger.balance(session, ledger.peer_payable(peer.host))
        if exposure + verdict.accepted_minor <= peer.credit_limit_minor:
            return verdict
        disputes = tuple(
            st.Dispute(str(line.get("line")), CREDIT_LIMIT, str(line.get("like")))
            for page in spool.pages()
            for line in page
            if isinstance(line, dict)
        )
        return st.Verdict(False, 0, disputes)

    async def _inbox_of(self, actor_uri: str) -> str:
        try:
            return (await self.keys.actor(actor_uri)).inbox
        except KeyUnavailable as error:
            raise Ignored(f"peer actor unavailable: {error.reason}") from None

    async def _verify_against_likes(
        self,
        document: dict[str, Any],
        peer: Peer,
        period: Period,
        line_pages: AsyncIterable[list[Any]] | Iterable[list[Any]] | None = None,
    ) -> st.Verdict:
        """Every line of the statement (all `line_pages`; default: its first page only)
        against the Likes the peer sent us, set-based in SQL."""
        try:
            return await verification.verify_statement(
                self.database,
                document,
                line_pages if line_pages is not None else [document.get("lines", [])],
                currency=self.settings.currency,
                period=str(period),
                cutoff=period.end + self.grace,
                sender_host=peer.host,
            )
        except st.StatementError as error:
            return st.Verdict(False, 0, (st.Dispute("statement", f"UNREADABLE: {error}"),))

    async def _book_accepted_incoming(
        self, session: AsyncSession, statement: Statement, peer: Peer
    ) -> None:
        """The peer owes us the total; our creators' earnings are pending until it pays."""
        credits: dict[str, int] = defaultdict(int)
        for object_uri, amount in await _sums_by_object(session, [statement.id]):
            creator = await self._creator_of(session, object_uri)
            credits[ledger.earnings_pending(creator)] -= amount
        credits = {code: amount for code, amount in credits.items() if amount}
        if not credits:
            return
        await ledger.post(
            session,
            txid=f"statement-in:{statement.uri}",
            kind="statement_in",
            postings=[(ledger.peer_receivable(peer.host), statement.total_minor), *credits.items()],
            currency=self.settings.currency,
            memo=f"accepted statement of {peer.host} for {statement.period}",
            now=self.clock.now(),
        )

    async def _creator_of(self, session: AsyncSession, object_uri: str) -> int:
        person = self.urls.actor("person", "")
        if object_uri.startswith(person):
            member = await session.scalar(
                select(Member.id).where(Member.username == object_uri[len(person) :])
            )
            if member is None:
                raise Ignored(f"no member of ours at {object_uri}")
            return int(member)
        prefix = self.urls.actor("thing", "")
        name = object_uri[len(prefix) :] if object_uri.startswith(prefix) else ""
        actor = await session.scalar(
            select(LocalActor).where(LocalActor.kind == "thing", LocalActor.username == name)
        )
        if actor is None or actor.thing_id is None:
            raise Ignored(f"no thing of ours at {object_uri}")
        thing = await session.get(Thing, actor.thing_id)
        assert thing is not None
        return thing.owner_id

    # --- the issuer hears back ------------------------------------------------------------

    async def on_response(self, inbound: Inbound) -> str:
        peer = await self._peer_of(inbound.actor_uri)
        response = inbound.object
        assert isinstance(response, dict)
        await self._verify_proof(response, inbound.actor_uri)
        now = self.clock.now()
        async with self.database.transaction() as session:
            statement = await session.scalar(
                select(Statement).where(
                    Statement.uri == response.get("statement"), Statement.direction == "out"
                )
            )
            if statement is None or statement.peer_host != peer.host:
                raise Ignored("a response to a statement we did not send them")
            if response.get("statementDigest") != statement.digest:
                raise Ignored("the response is for other content than we sent")
            if statement.state != "issued":
                return f"ignored: statement already {statement.state}"
            statement.state = "accepted" if inbound.type == "Accept" else "rejected"
            statement.response = response
            statement.responded_at = now
            if statement.state == "rejected":
                await self._return_disputed(session, statement, response)
        if statement.state == "rejected":
            # A corrected revision without the disputed lines follows at once.
            async with self.database.sessions() as session:
                run = await session.scalar(
                    select(ClearingRun).where(ClearingRun.period == statement.period)
                )
            assert run is not None
            await self._issue_one(
                Period.parse(statement.period), run, peer, await self._inbox_of(peer.clearing_actor)
            )
            return "our statement was rejected; a revision without the disputed lines was sent"
        await self.try_settle(statement.period, peer.host)
        return f"our statement was {statement.state}"

    async def _return_disputed(
        self, session: AsyncSession, statement: Statement, response: dict[str, Any]
    ) -> None:
        """Disputed lines are withdrawn: their shares go back to the donors' wallets."""
        disputed = st.disputed_like_ids(response)
        listed = {
            like: int(amount)
            for like, amount in await session.execute(
                select(StatementLine.like_uri, StatementLine.amount_minor).where(
                    StatementLine.statement_id == statement.id
                )
            )
        }
        returns: dict[str, int] = defaultdict(int)
        for like_uri in sorted(disputed & set(listed)):
            share = await session.scalar(select(Share).where(Share.like_uri == like_uri))
            if share is not None and listed[like_uri] > 0:
                returns[ledger.wallet(share.donor_id)] -= listed[like_uri]
        total = -sum(returns.values())
        if total:
            await ledger.post(
                session,
                txid=f"disputed-return:{statement.uri}",
                kind="disputed_return",
                postings=[(ledger.peer_payable(statement.peer_host), total), *returns.items()],
                currency=self.settings.currency,
                memo=f"lines of {statement.uri} disputed by {statement.peer_host}",
                now=self.clock.now(),
            )

    # --- the bilateral settlement -------------------------------------------------------------

    async def try_settle(self, period: str, peer_host: str) -> Settlement | None:
        """When both directions are accepted, record the net (same on both sides)."""
        async with self.database.transaction() as session:
            if await session.scalar(
                select(Settlement.id).where(
                    Settlement.period == period, Settlement.peer_host == peer_host
                )
            ):
                return None
            rows = (
                await session.scalars(
                    select(Statement).where(
                        Statement.period == period,
                        Statement.peer_host == peer_host,
                        Statement.state == "accepted",
                    )
                )
            ).all()
            out = [row for row in rows if row.direction == "out"]
            incoming = [row for row in rows if row.direction == "in"]
            if not out or not incoming:
                return None
            payable, receivable = out[-1].total_minor, incoming[-1].total_minor
            peer = await session.scalar(select(Peer).where(Peer.host == peer_host))
            assert peer is not None
            previous = await self._carried(session, period, peer_host)
            periods = [period]
            carried = 0
            if previous is not None:
                # Last month's net was below the threshold: it is settled together with this one.
                carried = previous.net_minor
                payable += previous.payable_minor
                receivable += previous.receivable_minor
                periods = [*previous.document.get("periods", [previous.period]), period]
                previous.state = "rolled_over"
            net = payable - receivable
            threshold = max(
                self.settings.settlement_threshold_minor,
                _threshold_of(incoming[-1].document),
            )
            # Both sides use the larger threshold of the two statements, so they agree.
            if net == 0:
                action = "settled"
            elif abs(net) < threshold:
                action = "carry"
            else:
                action = "pay"
            reference = payment_reference(period, self.host, peer_host)
            we_pay = net > 0
            us, them = self.actor_uri, peer.clearing_actor
            document = {
                "@context": [AS_CONTEXT, FLATTR_TERMS],
                "type": "BilateralSettlement",
                "schema": "flattrfed.bilateral/1",
                "id": pair_id(period, self.host, peer_host),
                "period": period,
                "legs": sorted(
                    [
                        {
                            "statement": out[-1].uri,
                            "digest": out[-1].digest,
                            "accepted": str(payable),
                        },
                        {
                            "statement": incoming[-1].uri,
                            "digest": incoming[-1].digest,
                            "accepted": str(receivable),
                        },
                    ],
                    key=lambda leg: leg["statement"],
                ),
                "net": {
                    # Nobody pays when the statements cancel out; both copies must say so alike.
                    "payer": None if net == 0 else (us if we_pay else them),
                    "payee": None if net == 0 else (them if we_pay else us),
                    "amount": str(abs(net)),
                },
                "action": action,
                "threshold": str(threshold),
                "carriedIn": str(carried),
                "periods": periods,
                "paymentReference": reference,
            }
            settlement = Settlement(
                uri=f"{self.settings.base_url}/settlement/{period}/pair/{peer_host}",
                period=period,
                peer_host=peer_host,
                payable_minor=payable,
                receivable_minor=receivable,
                carried_in_minor=carried,
                net_minor=net,
                action=action,
                payment_reference=reference,
                state={"pay": "agreed", "carry": "carried", "settled": "confirmed"}[action],
                document=proofs.sign_document(
                    document, await self.proof_key(session), self.clock.now()
                ),
                deadline=self.clock.now() + PAYMENT_DEADLINE,
                created_at=self.clock.now(),
            )
            session.add(settlement)
            await session.flush()
            await self._event(
                session,
                settlement,
                "agreed",
                "system",
                {"net_minor": net, "digest": sha256_digest(document)},
            )
            if action == "settled":
                postings = self._set_off(settlement, cash=0)
                postings += await self._release_earnings(session, settlement)
                if _merge(postings):
                    await ledger.post(
                        session,
                        txid=f"settlement-zero:{settlement.uri}",
                        kind="settlement_zero",
                        postings=_merge(postings),
                        currency=self.settings.currency,
                        memo="the statements cancel out",
                        now=self.clock.now(),
                    )
            return settlement

    async def _carried(
        self, session: AsyncSession, period: str, peer_host: str
    ) -> Settlement | None:
        previous = str(Period.parse(period).previous())
        return await session.scalar(
            select(Settlement).where(
                Settlement.period == previous,
                Settlement.peer_host == peer_host,
                Settlement.state == "carried",
            )
        )

    async def _event(
        self,
        session: AsyncSession,
        settlement: Settlement,
        action: str,
        actor: str,
        detail: dict[str, Any],
    ) -> None:
        session.add(
            SettlementEvent(
                settlement_id=settlement.id,
                action=action,
                actor=actor,
                detail=detail,
                at=self.clock.now(),
            )
        )
        await session.flush()

    # --- payment ------------------------------------------------------------------------------

    async def mark_paid(self, settlement_id: int, bank_reference: str, admin: str) -> Settlement:
        """The payer's admin sent the bank transfer: book it and tell the payee."""
        if not bank_reference.strip():
            raise ExchangeError("the bank reference of the transfer is required")
        now = self.clock.now()
        inbox = await self._peer_inbox(settlement_id)
        async with self.database.transaction() as session:
            settlement = await session.get(Settlement, settlement_id)
            if settlement is None:
                raise ExchangeError(f"no settlement {settlement_id}")
            if settlement.net_minor <= 0 or settlement.action != "pay":
                raise ExchangeError("this instance is not the payer of that settlement")
            if settlement.state not in {"agreed", "investigating"}:
                raise ExchangeError(f"the settlement is {settlement.state}, not agreed")
            settlement.state = "payment_sent"
            settlement.bank_reference = bank_reference.strip()
            # Paying the net also settles what the peer owed us: those earnings are real now.
            postings = self._set_off(settlement, cash=-settlement.net_minor)
            postings += await self._release_earnings(session, settlement)
            await ledger.post(
                session,
                txid=f"settlement-paid:{settlement.uri}",
                kind="settlement_paid",
                postings=_merge(postings),
                currency=self.settings.currency,
                memo=f"paid {settlement.payment_reference} by {settlement.bank_reference}",
                now=now,
            )
            await self._event(
                session,
                settlement,
                "payment_sent",
                admin,
                {"bank_reference": settlement.bank_reference},
            )
            await self._notify(session, settlement, "PaymentNotice", inbox)
        return settlement

    async def confirm(self, settlement_id: int, admin: str) -> Settlement:
        """The payee's admin found the money on the bank statement: earnings become available."""
        now = self.clock.now()
        inbox = await self._peer_inbox(settlement_id)
        async with self.database.transaction() as session:
            settlement = await session.get(Settlement, settlement_id)
            if settlement is None:
                raise ExchangeError(f"no settlement {settlement_id}")
            if settlement.net_minor >= 0 and settlement.action == "pay":
                raise ExchangeError("this instance is the payer; the payee confirms")
            if settlement.state not in {"agreed", "payment_sent", "investigating"}:
                raise ExchangeError(f"the settlement is {settlement.state}")
            settlement.state = "confirmed"
            postings = self._set_off(settlement, cash=-settlement.net_minor)
            postings += await self._release_earnings(session, settlement)
            await ledger.post(
                session,
                txid=f"settlement-confirmed:{settlement.uri}",
                kind="settlement_confirmed",
                postings=_merge(postings),
                currency=self.settings.currency,
                memo=f"received {settlement.payment_reference}",
                now=now,
            )
            await self._event(session, settlement, "confirmed", admin, {})
            await self._notify(session, settlement, "PaymentConfirmation", inbox)
        return settlement

    def _set_off(self, settlement: Settlement, *, cash: int) -> list[tuple[str, int]]:
        """Clear this period's payable and receivable with the peer against the cash moved."""
        postings: list[tuple[str, int]] = []
        if settlement.payable_minor:
            postings.append((ledger.peer_payable(settlement.peer_host), settlement.payable_minor))
        if settlement.receivable_minor:
            postings.append(
                (ledger.peer_receivable(settlement.peer_host), -settlement.receivable_minor)
            )
        if cash:
            postings.append((ledger.CASH_BANK, cash))
        return postings

    async def _release_earnings(
        self, session: AsyncSession, settlement: Settlement
    ) -> list[tuple[str, int]]:
        statements = (
            await session.scalars(
                select(Statement).where(
                    Statement.period.in_(settlement.document.get("periods", [settlement.period])),
                    Statement.peer_host == settlement.peer_host,
                    Statement.direction == "in",
                    Statement.state == "accepted",
                )
            )
        ).all()
        postings: list[tuple[str, int]] = []
        for object_uri, amount in await _sums_by_object(session, [row.id for row in statements]):
            creator = await self._creator_of(session, object_uri)
            postings.append((ledger.earnings_pending(creator), amount))
            postings.append((ledger.earnings_available(creator), -amount))
        return postings

    async def _peer_inbox(self, settlement_id: int) -> str | None:
        """The inbox of the settlement's peer, looked up before any transaction is opened."""
        async with self.database.sessions() as session:
            settlement = await session.get(Settlement, settlement_id)
            peer = (
                await session.scalar(select(Peer).where(Peer.host == settlement.peer_host))
                if settlement is not None
                else None
            )
        if peer is None:
            return None
        try:
            return (await self.keys.actor(peer.clearing_actor)).inbox
        except KeyUnavailable:
            log.warning("peer unreachable; payment message not queued", extra={"peer": peer.host})
            return None

    async def _notify(
        self,
        session: AsyncSession,
        settlement: Settlement,
        kind: str,
        inbox: str | None,
        *,
        id_suffix: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        if inbox is None:
            return
        peer = await session.scalar(select(Peer).where(Peer.host == settlement.peer_host))
        assert peer is not None
        document = {
            "@context": [AS_CONTEXT, FLATTR_TERMS],
            "type": kind,
            "id": f"{settlement.uri}/{kind}{id_suffix}",
            "settlement": settlement.document["id"],
            "paymentReference": settlement.payment_reference,
            "amount": str(abs(settlement.net_minor)),
            "at": iso(self.clock.now()),
            **(extra or {}),
        }
        signed = proofs.sign_document(document, await self.proof_key(session), self.clock.now())
        actor = await ensure_instance_actor(session, self.urls, self.clock.now())
        await enqueue_delivery(
            session,
            activity={
                "@context": [AS_CONTEXT, FLATTR_TERMS],
                "id": f"{signed['id']}/activity",
                "type": "Update",
                "actor": self.actor_uri,
                "to": [peer.clearing_actor],
                "object": signed,
            },
            actor_id=actor.id,
            inboxes=[inbox],
            now=self.clock.now(),
        )

    async def _settlement_for(self, inbound: Inbound) -> Settlement:
        peer = await self._peer_of(inbound.actor_uri)
        document = inbound.object
        assert isinstance(document, dict)
        await self._verify_proof(document, inbound.actor_uri)
        async with self.database.sessions() as session:
            settlement = await session.scalar(
                select(Settlement).where(
                    Settlement.peer_host == peer.host,
                    Settlement.payment_reference == document.get("paymentReference"),
                )
            )
        if settlement is None:
            raise Ignored("a payment message for no settlement we know")
        return settlement

    async def on_payment_notice(self, inbound: Inbound) -> str:
        settlement = await self._settlement_for(inbound)
        async with self.database.transaction() as session:
            row = await session.get(Settlement, settlement.id)
            assert row is not None
            await self._event(
                session,
                row,
                "payment_notice_received",
                inbound.actor_uri,
                {"document": inbound.object},
            )
        return "payment notice recorded; confirm when the money arrives"

    async def on_payment_confirmation(self, inbound: Inbound) -> str:
        settlement = await self._settlement_for(inbound)
        async with self.database.transaction() as session:
            row = await session.get(Settlement, settlement.id)
            assert row is not None
            if row.state in {"payment_sent", "investigating"}:
                row.state = "confirmed"
            await self._event(session, row, "confirmed_by_payee", inbound.actor_uri, {})
        return "payee confirmed our payment"

    async def dispute(self, settlement_id: int, reason: str, admin: str) -> Settlement:
        """An admin says a payment did not arrive (or is wrong): the settlement is investigated,
        and the peer is told (`PaymentDispute`), so its copy is investigated too."""
        reason = reason.strip()[:MAX_DISPUTE_REASON]
        if not reason:
            raise ExchangeError("say what is wrong (the reason is kept in the history)")
        inbox = await self._peer_inbox(settlement_id)
        async with self.database.transaction() as session:
            settlement = await session.get(Settlement, settlement_id)
            if settlement is None:
                raise ExchangeError(f"no settlement {settlement_id}")
            if settlement.state not in {"agreed", "payment_sent"}:
                raise ExchangeError(f"the settlement is {settlement.state}; nothing to dispute")
            earlier = await session.scalar(
                select(func.count()).where(
                    SettlementEvent.settlement_id == settlement.id,
                    SettlementEvent.action == "disputed",
                )
            )
            settlement.state = "investigating"
            await self._event(session, settlement, "disputed", admin, {"reason": reason})
            # Numbered: a settlement disputed again later is a new message, not a repeat.
            await self._notify(
                session,
                settlement,
                "PaymentDispute",
                inbox,
                id_suffix=f"/{int(earlier or 0) + 1}",
                extra={"reason": reason},
            )
        return settlement

    async def on_payment_dispute(self, inbound: Inbound) -> str:
        """The peer's admin disputes the payment: our copy is investigated too."""
        settlement = await self._settlement_for(inbound)
        document = inbound.object
        reason = document.get("reason") if isinstance(document, dict) else None
        reason = reason.strip()[:MAX_DISPUTE_REASON] if isinstance(reason, str) else ""
        async with self.database.transaction() as session:
            row = await session.get(Settlement, settlement.id)
            assert row is not None
            if row.state in {"agreed", "payment_sent"}:
                row.state = "investigating"
            await self._event(
                session, row, "disputed_by_peer", inbound.actor_uri, {"reason": reason}
            )
        return f"the peer disputes the payment; the settlement is {row.state}"

    async def settle_outstanding(self) -> int:
        """Pairs with both statements accepted but no settlement (a crash came in between)."""
        async with self.database.sessions() as session:
            pairs = (
                await session.execute(
                    select(Statement.period, Statement.peer_host)
                    .where(Statement.state == "accepted")
                    .group_by(Statement.period, Statement.peer_host)
                )
            ).all()
        made = 0
        for period, host in pairs:
            if await self.try_settle(period, host) is not None:
                made += 1
        return made

    async def daily(self) -> int:
        """The daily watch: finish interrupted settling, then flag overdue payments."""
        await self.settle_outstanding()
        return await self.overdue()

    async def overdue(self) -> int:
        """Payments not confirmed by their deadline open an investigation."""
        now = self.clock.now()
        count = 0
        async with self.database.transaction() as session:
            rows = (
                await session.scalars(
                    select(Settlement).where(
                        Settlement.state.in_(["agreed", "payment_sent"]),
                        Settlement.deadline < now,
                    )
                )
            ).all()
            for row in rows:
                row.state = "investigating"
                await self._event(
                    session, row, "investigating", "system", {"deadline": iso(row.deadline)}
                )
                count += 1
        return count


def _threshold_of(statement: dict[str, Any]) -> int:
    rules = statement.get("rules")
    value = rules.get("settlementThresholdMinor") if isinstance(rules, dict) else None
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 16 else 0


async def store_statement_lines(
    session: AsyncSession, statement_id: int, line_pages: Iterable[list[Any]]
) -> None:
    """The lines of an issued or accepted statement, page by page, in order."""
    position = 0
    for number, page in enumerate(line_pages, start=1):
        rows = []
        for item in page:
            _given, line = st.parse_line(item)
            rows.append(
                {
                    "statement_id": statement_id,
                    "position": position,
                    "page": number,
                    "like_uri": line.like_uri,
                    "donor_uri": line.donor_uri,
                    "object_uri": line.object_uri,
                    "amount_minor": line.amount_minor,
                }
            )
            position += 1
        if rows:
            await session.execute(insert(StatementLine), rows)


async def stored_lines(session: AsyncSession, statement_id: int) -> list[dict[str, str]]:
    """Every line of an issued or accepted statement, all pages, as line documents ([] when
    only the document was kept, as for a rejected one)."""
    rows = await session.execute(
        select(
            StatementLine.like_uri,
            StatementLine.donor_uri,
            StatementLine.object_uri,
            StatementLine.amount_minor,
        )
        .where(StatementLine.statement_id == statement_id)
        .order_by(StatementLine.position)
    )
    return [st.line_document(st.Line(*row)) for row in rows]


async def _sums_by_object(session: AsyncSession, statement_ids: list[int]) -> list[tuple[str, int]]:
    """What the lines of these statements credit each of our things or members, summed in SQL."""
    if not statement_ids:
        return []
    rows = await session.execute(
        select(StatementLine.object_uri, func.sum(StatementLine.amount_minor))
        .where(StatementLine.statement_id.in_(statement_ids))
        .group_by(StatementLine.object_uri)
        .order_by(StatementLine.object_uri)
    )
    return [(str(target), int(amount)) for target, amount in rows]


def _merge(postings: list[tuple[str, int]]) -> list[tuple[str, int]]:
    merged: dict[str, int] = defaultdict(int)
    for code, amount in postings:
        merged[code] += amount
    return [(code, amount) for code, amount in merged.items() if amount]
