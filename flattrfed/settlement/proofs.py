"""Ed25519 Data Integrity proofs (eddsa-jcs-2022, FEP-8b32) on settlement documents."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flattrfed.settlement.canonical import base58btc_decode, base58btc_encode, canonical_json

__all__ = [
    "CRYPTOSUITE",
    "MAX_PROOFS",
    "PROOF_PURPOSE",
    "PROOF_TYPE",
    "KeyResolver",
    "ProofError",
    "ProofKey",
    "Reason",
    "generate_ed25519_key",
    "multikey_from_public",
    "public_from_multikey",
    "sign_document",
    "verify_all",
    "verify_document",
]

# How it works (W3C "Data Integrity EdDSA Cryptosuites v1.0", eddsa-jcs-2022; FEP-8b32):
#
#   proof options  = {type, cryptosuite, verificationMethod, proofPurpose, created}
#                    plus "@context" = the document's "@context" when the document has one
#   unsecured doc  = the document without its "proof" member
#   hashData       = SHA-256(JCS(proof options)) || SHA-256(JCS(unsecured doc))   (64 bytes)
#   proofValue     = "z" + base58btc(Ed25519 signature over hashData)             (64 bytes)
#
# Everything in the proof except proofValue is signed, so changing `created` or
# `verificationMethod` breaks the proof just as changing the document does.
#
# Several proofs (a proof set; how a BilateralSettlement carries both parties' signatures):
# every party signs the document with *no* proof at all, exactly as above, and the proofs are
# kept as a list under "proof". The proofs are therefore independent and order-free: either
# party may sign first, both may sign separate copies that are merged later, and verify_all
# checks each one against the same unsecured document. The flip side is that the set itself is
# not signed: anyone can drop a proof or append one of their own without breaking the others,
# so a caller must compare the verificationMethods verify_all returns with the signers it
# requires (both parties, say), not merely count them. There are no proof chains
# (`previousProof`).
#
# Deliberately stricter than the specification, because we are both signer and verifier:
#   * a proof may only carry the members we write (plus @context); `expires`, `domain`,
#     `challenge`, `nonce`, `id`, `previousProof`... are refused as malformed rather than
#     signed-but-ignored;
#   * `created` is required and must be an XML Schema dateTimeStamp (a timezone is mandatory);
#   * a proof "@context" must equal the document's "@context" exactly. The specification only
#     asks the document's context to start with the proof's and then signs the proof's, which
#     would let someone append contexts to a signed document;
#   * proofPurpose must be assertionMethod (the purpose under which an actor publishes its
#     Multikey for FEP-8b32).

CRYPTOSUITE: Final = "eddsa-jcs-2022"
PROOF_TYPE: Final = "DataIntegrityProof"
PROOF_PURPOSE: Final = "assertionMethod"

Reason = Literal[
    "missing",  # no proof at all (no "proof" member, or an empty list)
    "malformed",  # a proof or document we cannot process: shape, types, proofValue, created
    "cryptosuite",  # not a DataIntegrityProof with the eddsa-jcs-2022 cryptosuite
    "purpose",  # proofPurpose other than assertionMethod
    "unknown_key",  # resolve_key knows no key for the verificationMethod
    "mismatch",  # the signature does not verify (document, proof options or key differ)
]

# Multicodec ed25519-pub (0xed) as an unsigned varint: 0xed 0x01. Base58btc turns a 34-byte
# header + key into the familiar 'z6Mk...'.
_ED25519_PUB_HEADER: Final = b"\xed\x01"
_ED25519_KEY_BYTES: Final = 32
_SIGNATURE_BYTES: Final = 64
# 64 bytes need at most 88 base58 digits; 34 bytes at most 47. Checked before decoding so a
# hostile megabyte of '1's is never fed to the (quadratic) big-integer conversion.
_MAX_PROOF_VALUE_CHARS: Final = 1 + 88
_MAX_MULTIKEY_CHARS: Final = 1 + 47
# A bilateral settlement carries two proofs; a hostile document is not given a thousand
# signature checks.
MAX_PROOFS: Final = 8

_REQUIRED_MEMBERS: Final = frozenset(
    {"type", "cryptosuite", "verificationMethod", "proofPurpose", "created", "proofValue"}
)
_ALLOWED_MEMBERS: Final = _REQUIRED_MEMBERS | {"@context"}

# XML Schema 1.1 dateTimeStamp, as Data Integrity requires: the timezone is not optional. Years
# are four digits (0001-9999), all a settlement proof ever needs.
_DATE_TIME_STAMP: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


class ProofError(Exception):
    """A document proof we will not accept; `reason` is a short code for logs and metrics.

    The message never echoes document values: they are attacker-chosen and end up in logs.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ProofKey:
    """A signing key and the verificationMethod id (e.g. 'https://a.example/actor#ed25519-key')
    under which its public half is published in the actor's assertionMethod."""

    verification_method: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.verification_method, str) or not self.verification_method:
            raise ValueError("verification_method must be a non-empty string")
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise TypeError("private_key must be an Ed25519PrivateKey")


# --- keys --------------------------------------------------------------------------------------


def generate_ed25519_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def multikey_from_public(public_key: Ed25519PublicKey) -> str:
    """The Multikey publicKeyMultibase of an Ed25519 key: 'z' + base58btc(0xed01 || key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "z" + base58btc_encode(_ED25519_PUB_HEADER + raw)


def public_from_multikey(text: str) -> Ed25519PublicKey:
    """Parse a Multikey publicKeyMultibase ('z6Mk...'); ValueError unless it is exactly a
    base58btc multibase string of the ed25519-pub multicodec header and 32 key bytes."""
    if not isinstance(text, str) or not text.startswith("z"):
        raise ValueError("Multikey must be a base58btc multibase string starting with 'z'")
    if len(text) > _MAX_MULTIKEY_CHARS:
        raise ValueError("Multikey too long for an Ed25519 key")
    decoded = base58btc_decode(text[1:])
    if len(decoded) != len(_ED25519_PUB_HEADER) + _ED25519_KEY_BYTES:
        raise ValueError("Multikey does not hold a 32-byte key behind a 2-byte header")
    if not decoded.startswith(_ED25519_PUB_HEADER):
        raise ValueError("Multikey is not an ed25519-pub (0xed01) key")
    return Ed25519PublicKey.from_public_bytes(decoded[len(_ED25519_PUB_HEADER) :])


# --- signing -----------------------------------------------------------------------------------


def sign_document(document: dict[str, Any], key: ProofKey, created: datetime) -> dict[str, Any]:
    """A deep copy of `document` carrying one more eddsa-jcs-2022 proof by `key`.

    The proof covers the document without any "proof" member. A document with no proof gets a
    single proof object; one that already has proofs (an object or a list) gets a list with the
    new proof appended: that is how the second party co-signs a bilateral settlement. `created`
    must be timezone-aware; it is written in UTC with a 'Z', to the whole second.

    Raises ValueError for a naive `created`, for a "proof" member that is not a proof object or
    a list of them, and for a key that already signed the document; ValueError or TypeError, as
    canonical_json does, for a document without a canonical form.
    """
    if created.tzinfo is None or created.utcoffset() is None:
        raise ValueError("created must be a timezone-aware datetime")
    existing = _existing_proofs(document)
    for proof in existing:
        if proof.get("verificationMethod") == key.verification_method:
            raise ValueError("this verificationMethod has already signed the document")

    unsecured = {name: value for name, value in document.items() if name != "proof"}
    options: dict[str, Any] = {
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "verificationMethod": key.verification_method,
        "proofPurpose": PROOF_PURPOSE,
        "created": _xml_datetime(created),
    }
    if "@context" in unsecured:
        options["@context"] = copy.deepcopy(unsecured["@context"])
    signature = key.private_key.sign(_hash_data(options, canonical_json(unsecured)))
    proof = options | {"proofValue": "z" + base58btc_encode(signature)}

    signed = copy.deepcopy(unsecured)
    signed["proof"] = [*copy.deepcopy(existing), proof] if existing else proof
    return signed


def _existing_proofs(document: dict[str, Any]) -> list[dict[str, Any]]:
    if "proof" not in document:
        return []
    current = document["proof"]
    proofs = current if isinstance(current, list) else [current]
    if not all(isinstance(proof, dict) for proof in proofs):
        raise ValueError('"proof" must be a proof object or a list of proof objects')
    return proofs


def _xml_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _hash_data(proof_options: dict[str, Any], canonical_document: bytes) -> bytes:
    return (
        hashlib.sha256(canonical_json(proof_options)).digest()
        + hashlib.sha256(canonical_document).digest()
    )


# --- verifying ---------------------------------------------------------------------------------

KeyResolver = Callable[[str], Ed25519PublicKey | None]


def verify_document(document: dict[str, Any], resolve_key: KeyResolver) -> str:
    """Verify the single proof on `document`; return its verificationMethod.

    `proof` may be one proof object or a list holding exactly one; a document with several
    proofs is refused as malformed here (use verify_all), so that "verified" never silently
    means "one of several verified". `resolve_key(verificationMethod)` returns the Ed25519 key
    published under that id (for an actor: in its assertionMethod), or None.

    Raises ProofError with reason missing, malformed, cryptosuite, purpose, unknown_key or
    mismatch.
    """
    proofs = _proofs_of(document)
    if len(proofs) != 1:
        raise ProofError("malformed", f"{len(proofs)} proofs; verify_all checks proof sets")
    unsecured, canonical_document = _unsecured(document)
    return _verify_one(unsecured, canonical_document, proofs[0], resolve_key)


def verify_all(document: dict[str, Any], resolve_key: KeyResolver) -> list[str]:
    """Verify every proof on `document` (one object or a list); return their
    verificationMethods in document order.

    Each proof must verify on its own over the document without any proof (see the module
    notes: proofs are independent and order-free). One bad proof fails the whole document, and
    two proofs naming the same verificationMethod are malformed. The caller must still check
    that the returned methods are the signers it requires.
    """
    proofs = _proofs_of(document)
    methods = [proof.get("verificationMethod") for proof in proofs if isinstance(proof, dict)]
    named = [method for method in methods if isinstance(method, str)]
    if len(set(named)) != len(named):
        raise ProofError("malformed", "two proofs name the same verificationMethod")
    unsecured, canonical_document = _unsecured(document)
    return [_verify_one(unsecured, canonical_document, proof, resolve_key) for proof in proofs]


def _proofs_of(document: dict[str, Any]) -> list[object]:
    if not isinstance(document, dict):
        raise ProofError("malformed", "document is not a JSON object")
    if "proof" not in document or document["proof"] is None:
        raise ProofError("missing", "document has no proof")
    proof: object = document["proof"]
    proofs: list[object] = proof if isinstance(proof, list) else [proof]
    if not proofs:
        raise ProofError("missing", "document has an empty proof list")
    if len(proofs) > MAX_PROOFS:
        raise ProofError("malformed", f"more than {MAX_PROOFS} proofs")
    return proofs


def _unsecured(document: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    unsecured = {name: value for name, value in document.items() if name != "proof"}
    try:
        return unsecured, canonical_json(unsecured)
    except (TypeError, ValueError) as exc:
        raise ProofError("malformed", f"document has no canonical form: {exc}") from None


def _verify_one(
    unsecured: dict[str, Any],
    canonical_document: bytes,
    proof: object,
    resolve_key: KeyResolver,
) -> str:
    if not isinstance(proof, dict):
        raise ProofError("malformed", "proof is not a JSON object")
    if not _REQUIRED_MEMBERS.issubset(proof):
        raise ProofError("malformed", "proof lacks a required member")
    if not _ALLOWED_MEMBERS.issuperset(proof):
        raise ProofError("malformed", "proof carries a member we do not sign or check")
    for name in _REQUIRED_MEMBERS:
        if not isinstance(proof[name], str):
            raise ProofError("malformed", f"proof {name} is not a string")

    if proof["type"] != PROOF_TYPE or proof["cryptosuite"] != CRYPTOSUITE:
        raise ProofError("cryptosuite", f"only {PROOF_TYPE} with {CRYPTOSUITE} is accepted")
    if proof["proofPurpose"] != PROOF_PURPOSE:
        raise ProofError("purpose", f"proofPurpose must be {PROOF_PURPOSE}")
    signature = _signature_bytes(proof["proofValue"])
    if not _is_date_time_stamp(proof["created"]):
        raise ProofError("malformed", "created is not an XML Schema dateTimeStamp")
    method: str = proof["verificationMethod"]
    if not method:
        raise ProofError("malformed", "verificationMethod is empty")

    options = {name: value for name, value in proof.items() if name != "proofValue"}
    try:
        canonical_options = canonical_json(options)
    except (TypeError, ValueError) as exc:
        raise ProofError("malformed", f"proof has no canonical form: {exc}") from None
    if "@context" in options and (
        "@context" not in unsecured
        or canonical_json(unsecured["@context"]) != canonical_json(options["@context"])
    ):
        raise ProofError("mismatch", "proof @context differs from the document's")

    public_key = resolve_key(method)
    if public_key is None:
        raise ProofError("unknown_key", "no key known for the verificationMethod")
    hash_data = (
        hashlib.sha256(canonical_options).digest() + hashlib.sha256(canonical_document).digest()
    )
    try:
        public_key.verify(signature, hash_data)
    except InvalidSignature:
        raise ProofError("mismatch", "signature does not verify") from None
    return method


def _signature_bytes(proof_value: str) -> bytes:
    if not proof_value.startswith("z") or len(proof_value) > _MAX_PROOF_VALUE_CHARS:
        raise ProofError("malformed", "proofValue is not a base58btc multibase string")
    try:
        signature = base58btc_decode(proof_value[1:])
    except ValueError:
        raise ProofError("malformed", "proofValue is not valid base58btc") from None
    if len(signature) != _SIGNATURE_BYTES:
        raise ProofError("malformed", "proofValue does not hold a 64-byte Ed25519 signature")
    return signature


def _is_date_time_stamp(text: str) -> bool:
    if not _DATE_TIME_STAMP.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        # Out-of-range fields: month 13, hour 25, and xsd's 24:00:00, which Python refuses.
        return False
    return True
