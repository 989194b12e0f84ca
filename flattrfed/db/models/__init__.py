"""All models, imported here so Base.metadata knows every table (Alembic compares against it)."""

from flattrfed.db.models.federation import (
    ActorKey,
    DomainBlock,
    FederationHost,
    Follow,
    InboundActivity,
    LocalActor,
    OutboundFollow,
    OutboundLike,
    Post,
    ReceivedLike,
    RemoteActor,
    RemoteObject,
)
from flattrfed.db.models.flattring import (
    DepositRequest,
    Flattr,
    IdentityClaim,
    InstancePolicy,
    Invite,
    PayoutRequest,
    Peer,
)
from flattrfed.db.models.ledger import LedgerAccount, LedgerPosting, LedgerTransaction
from flattrfed.db.models.members import Member
from flattrfed.db.models.settlement import (
    ClearingRun,
    DonorClose,
    ProofKey,
    Settlement,
    SettlementEvent,
    Share,
    Statement,
)
from flattrfed.db.models.things import Thing
from flattrfed.db.models.work import WorkItem, WorkState

__all__ = [
    "ActorKey",
    "ClearingRun",
    "DepositRequest",
    "DomainBlock",
    "DonorClose",
    "FederationHost",
    "Flattr",
    "Follow",
    "IdentityClaim",
    "InboundActivity",
    "InstancePolicy",
    "Invite",
    "LedgerAccount",
    "LedgerPosting",
    "LedgerTransaction",
    "LocalActor",
    "Member",
    "OutboundFollow",
    "OutboundLike",
    "PayoutRequest",
    "Peer",
    "Post",
    "ProofKey",
    "ReceivedLike",
    "RemoteActor",
    "RemoteObject",
    "Settlement",
    "SettlementEvent",
    "Share",
    "Statement",
    "Thing",
    "WorkItem",
    "WorkState",
]
