"""eddsa-jcs-2022 Data Integrity proofs: signing, verifying, proof sets, Multikeys."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flattrfed.settlement.canonical import (
    MAX_SAFE_INTEGER,
    base58btc_decode,
    base58btc_encode,
    canonical_json,
)
from flattrfed.settlement.proofs import (
    CRYPTOSUITE,
    MAX_PROOFS,
    ProofError,
    ProofKey,
    generate_ed25519_key,
    multikey_from_public,
    public_from_multikey,
    sign_document,
    verify_all,
    verify_document,
)

CREATED = datetime(2025, 7, 4, 1, 0, tzinfo=UTC)
A_METHOD = "https://a.example/actor#ed25519-key"
B_METHOD = "https://b.example/actor#ed25519-key"


def statement() -> dict[str, Any]:
    """A settlement statement in the shape of research/clearing.md §4.3, before signing."""
    return {
        "@context": [
            "https://www.w3.org/ns/activitystreams",
            "https://w3id.org/security/data-integrity/v2",
            "https://flattrfed.example/ns/v1",
        ],
        "type": "SettlementStatement",
        "schema": "flattrfed.statement/1",
        "id": "https://a.example/settlement/2025-06/b.example/r1",
        "revision": 1,
        "supersedes": None,
        "period": {
            "id": "2025-06",
            "start": "2025-06-01T00:00:00Z",
            "end": "2025-07-01T00:00:00Z",
            "cutoff": "2025-07-04T00:00:00Z",
        },
        "issuer": "https://a.example/actor",
        "counterparty": "https://b.example/actor",
        "currency": "EUR",
        "scale": 2,
        "rules": {"split": "flattrfed-split/1", "fee_bp": 1000, "fee_rounding": "floor"},
        "lines": [
            {
                "line": "sha256:9f2e",
                "like": "https://a.example/activities/like/01J0",
                "donor": "https://a.example/users/alice",
                "amount": "128",
            },
            {
                "line": "sha256:77aa",
                "like": "https://a.example/activities/like/01J1",
                "donor": "https://a.example/users/alice",
                "amount": "128",
            },
        ],
        "totals": {"lines": 2, "amount": "256"},
        "final": True,
        "issued": "2025-07-04T01:00:00Z",
    }


class Keys:
    """Named signing keys and the resolver a verifier would build from actors' Multikeys."""

    def __init__(self, *methods: str) -> None:
        self.private = {method: generate_ed25519_key() for method in methods}

    def key(self, method: str) -> ProofKey:
        return ProofKey(method, self.private[method])

    def resolve(self, method: str) -> Ed25519PublicKey | None:
        key = self.private.get(method)
        return None if key is None else key.public_key()


@pytest.fixture
def keys() -> Keys:
    return Keys(A_METHOD, B_METHOD)


def reason_of(action: Callable[[], object]) -> str:
    with pytest.raises(ProofError) as caught:
        action()
    return caught.value.reason


# --- W3C known-answer test ---------------------------------------------------------------------
# From w3c/vc-di-eddsa, TestVectors/: keyPair.json (the example key pair), and
# eddsa-jcs-2022/signedJCS.json, sigBTC58JCS.txt, sigHexJCS.txt, canonDocJCS.txt, docHashJCS.txt.

W3C_PUBLIC_MULTIBASE = "z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2"
W3C_PRIVATE_MULTIBASE = "z3u2en7t5LR2WtQH5PfFqMqwVHBeXouLzo6haApm8XHqvjxq"
W3C_METHOD = "https://vc.example/issuers/5678#z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2"
W3C_CONTEXT = [
    "https://www.w3.org/ns/credentials/v2",
    "https://www.w3.org/ns/credentials/examples/v2",
]
W3C_CREDENTIAL: dict[str, Any] = {
    "@context": W3C_CONTEXT,
    "id": "urn:uuid:58172aac-d8ba-11ed-83dd-0b3aef56cc33",
    "type": ["VerifiableCredential", "AlumniCredential"],
    "name": "Alumni Credential",
    "description": "A minimum viable example of an Alumni Credential.",
    "issuer": "https://vc.example/issuers/5678",
    "validFrom": "2023-01-01T00:00:00Z",
    "credentialSubject": {"id": "did:example:abcdefgh", "alumniOf": "The School of Examples"},
}
W3C_PROOF: dict[str, Any] = {
    "type": "DataIntegrityProof",
    "cryptosuite": "eddsa-jcs-2022",
    "created": "2023-02-24T23:36:38Z",
    "verificationMethod": W3C_METHOD,
    "proofPurpose": "assertionMethod",
    "@context": W3C_CONTEXT,
    "proofValue": (
        "z63t83Y53KfzJ5ZosfKTnqfMcKB2dmTrfjSaQjeNNjAD5srBowQfmWqeRb8rRjmeEuCBEsddF9LsVogtuTsijJKh4"
    ),
}
W3C_SIGNATURE_HEX = (
    "fc91dec6565f35fbe185a77352e7fc512f95d1904da305cfef32ab8135469301"
    "f5a72d4e7a58368fc6ffc497b44633993bac054e3bc1436e3c846db8f1544503"
)
W3C_CANONICAL_CREDENTIAL = (
    '{"@context":["https://www.w3.org/ns/credentials/v2",'
    '"https://www.w3.org/ns/credentials/examples/v2"],'
    '"credentialSubject":{"alumniOf":"The School of Examples","id":"did:example:abcdefgh"},'
    '"description":"A minimum viable example of an Alumni Credential.",'
    '"id":"urn:uuid:58172aac-d8ba-11ed-83dd-0b3aef56cc33",'
    '"issuer":"https://vc.example/issuers/5678","name":"Alumni Credential",'
    '"type":["VerifiableCredential","AlumniCredential"],"validFrom":"2023-01-01T00:00:00Z"}'
)
W3C_CREDENTIAL_HASH = "59b7cb6251b8991add1ce0bc83107e3db9dbbab5bd2c28f687db1a03abc92f19"


def w3c_private_key() -> Ed25519PrivateKey:
    decoded = base58btc_decode(W3C_PRIVATE_MULTIBASE[1:])
    assert decoded[:2] == b"\x80\x26"  # multicodec ed25519-priv (0x1300) as a varint
    return Ed25519PrivateKey.from_private_bytes(decoded[2:])


def w3c_resolve(method: str) -> Ed25519PublicKey | None:
    return public_from_multikey(W3C_PUBLIC_MULTIBASE) if method == W3C_METHOD else None


def test_w3c_vector_canonical_credential_and_its_hash() -> None:
    canonical = canonical_json(W3C_CREDENTIAL)
    assert canonical.decode("utf-8") == W3C_CANONICAL_CREDENTIAL
    assert hashlib.sha256(canonical).hexdigest() == W3C_CREDENTIAL_HASH


def test_w3c_vector_key_pair_matches() -> None:
    assert multikey_from_public(w3c_private_key().public_key()) == W3C_PUBLIC_MULTIBASE


def test_w3c_vector_verifies() -> None:
    signed = W3C_CREDENTIAL | {"proof": W3C_PROOF}
    assert verify_document(signed, w3c_resolve) == W3C_METHOD
    assert verify_all(signed, w3c_resolve) == [W3C_METHOD]


def test_w3c_vector_is_reproduced_byte_for_byte() -> None:
    # Ed25519 is deterministic: same key, same proof options, same document -> same proofValue.
    created = datetime(2023, 2, 24, 23, 36, 38, tzinfo=UTC)
    signed = sign_document(W3C_CREDENTIAL, ProofKey(W3C_METHOD, w3c_private_key()), created)
    assert signed["proof"] == W3C_PROOF
    assert base58btc_decode(signed["proof"]["proofValue"][1:]).hex() == W3C_SIGNATURE_HEX


def test_w3c_vector_intermediate_proof_config_hash() -> None:
    # The spec's worked example of the same credential signed under a did:key method
    # (proofCanonJCS.txt / proofHashJCS.txt): SHA-256 of the canonical proof configuration.
    did_key = "did:key:" + W3C_PUBLIC_MULTIBASE + "#" + W3C_PUBLIC_MULTIBASE
    options = {k: v for k, v in W3C_PROOF.items() if k != "proofValue"}
    options["verificationMethod"] = did_key
    assert hashlib.sha256(canonical_json(options)).hexdigest() == (
        "66ab154f5c2890a140cb8388a22a160454f80575f6eae09e5a097cabe539a1db"
    )


def test_w3c_vector_tampered_fails() -> None:
    signed = W3C_CREDENTIAL | {"proof": W3C_PROOF}
    tampered = copy.deepcopy(signed)
    tampered["credentialSubject"]["alumniOf"] = "The School of Counterexamples"
    assert reason_of(lambda: verify_document(tampered, w3c_resolve)) == "mismatch"


# --- round trip --------------------------------------------------------------------------------


def test_round_trip(keys: Keys) -> None:
    document = statement()
    signed = sign_document(document, keys.key(A_METHOD), CREATED)
    assert verify_document(signed, keys.resolve) == A_METHOD
    assert verify_all(signed, keys.resolve) == [A_METHOD]
    assert document == statement()  # the input is not touched
    assert {k: v for k, v in signed.items() if k != "proof"} == document


def test_proof_shape(keys: Keys) -> None:
    proof = sign_document(statement(), keys.key(A_METHOD), CREATED)["proof"]
    assert set(proof) == {
        "@context",
        "type",
        "cryptosuite",
        "verificationMethod",
        "proofPurpose",
        "created",
        "proofValue",
    }
    assert proof["type"] == "DataIntegrityProof"
    assert proof["cryptosuite"] == CRYPTOSUITE == "eddsa-jcs-2022"
    assert proof["proofPurpose"] == "assertionMethod"
    assert proof["verificationMethod"] == A_METHOD
    assert proof["created"] == "2025-07-04T01:00:00Z"
    assert proof["@context"] == statement()["@context"]
    assert proof["proofValue"].startswith("z")
    assert len(base58btc_decode(proof["proofValue"][1:])) == 64


def test_document_without_context_gets_a_proof_without_context(keys: Keys) -> None:
    document = {"type": "Note", "amount": "5"}
    signed = sign_document(document, keys.key(A_METHOD), CREATED)
    assert "@context" not in signed["proof"]
    assert verify_document(signed, keys.resolve) == A_METHOD


def test_created_is_utc_with_z_to_the_second(keys: Keys) -> None:
    local = datetime(2025, 7, 4, 3, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    signed = sign_document(statement(), keys.key(A_METHOD), local)
    assert signed["proof"]["created"] == "2025-07-04T01:00:00Z"
    assert verify_document(signed, keys.resolve) == A_METHOD


def test_naive_created_is_refused(keys: Keys) -> None:
    with pytest.raises(ValueError, match="timezone"):
        sign_document(statement(), keys.key(A_METHOD), datetime(2025, 7, 4))  # noqa: DTZ001


def test_documents_with_floats_cannot_be_signed_or_verified(keys: Keys) -> None:
    with pytest.raises(ValueError, match="floats"):
        sign_document(statement() | {"amount": 2.56}, keys.key(A_METHOD), CREATED)
    signed = sign_document(statement(), keys.key(A_METHOD), CREATED)
    signed["totals"]["amount"] = 2.56
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "malformed"


def test_proof_key_validation() -> None:
    with pytest.raises(ValueError, match="verification_method"):
        ProofKey("", generate_ed25519_key())
    assert "private_key" not in repr(ProofKey(A_METHOD, generate_ed25519_key()))


# --- tampering ---------------------------------------------------------------------------------


def leaf_paths(node: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in leaf_paths(value, (*prefix, key))]
    if isinstance(node, list):
        return [p for index, value in enumerate(node) for p in leaf_paths(value, (*prefix, index))]
    return [prefix]


def changed(value: object) -> object:
    """A different JSON value of a kind the document could have held."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value - 1 if value == MAX_SAFE_INTEGER else value + 1
    if isinstance(value, str):
        return value + "x" if value else "x"
    raise AssertionError(f"unexpected leaf {value!r}")


def set_path(document: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    node: Any = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def get_path(document: dict[str, Any], path: tuple[str | int, ...]) -> object:
    node: Any = document
    for step in path:
        node = node[step]
    return node


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.text(max_size=8)
)
json_documents = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k != "proof"),
    st.recursive(
        json_leaves,
        lambda children: (
            st.lists(children, min_size=1, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, min_size=1, max_size=4)
        ),
        max_leaves=12,
    ),
    min_size=1,
    max_size=6,
)

_KEYS = Keys(A_METHOD, B_METHOD)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(json_documents, st.data())
def test_changing_any_leaf_breaks_the_proof(document: dict[str, Any], data: st.DataObject) -> None:
    signed = sign_document(document, _KEYS.key(A_METHOD), CREATED)
    paths = [p for p in leaf_paths(signed) if p[0] != "proof"]
    path = data.draw(st.sampled_from(paths))
    set_path(signed, path, changed(get_path(signed, path)))
    assert reason_of(lambda: verify_document(signed, _KEYS.resolve)) == "mismatch"


@given(st.data())
def test_changing_any_leaf_of_the_statement_breaks_the_proof(data: st.DataObject) -> None:
    signed = sign_document(statement(), _KEYS.key(A_METHOD), CREATED)
    path = data.draw(st.sampled_from([p for p in leaf_paths(signed) if p[0] != "proof"]))
    set_path(signed, path, changed(get_path(signed, path)))
    assert reason_of(lambda: verify_document(signed, _KEYS.resolve)) == "mismatch"


@given(st.data())
def test_changing_any_leaf_of_the_proof_is_refused(data: st.DataObject) -> None:
    signed = sign_document(statement(), _KEYS.key(A_METHOD), CREATED)
    path = data.draw(st.sampled_from([p for p in leaf_paths(signed) if p[0] == "proof"]))
    set_path(signed, path, changed(get_path(signed, path)))
    with pytest.raises(ProofError):
        verify_document(signed, _KEYS.resolve)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("final"),
        lambda d: d.update(extra="x"),
        lambda d: d["lines"].pop(),
        lambda d: d["lines"].reverse(),
        lambda d: d["lines"][0].update(note=None),
        lambda d: d["@context"].append("https://evil.example/ns"),
        lambda d: d.update(revision="1"),
    ],
)
def test_structural_changes_break_the_proof(keys: Keys, edit: Callable[[Any], object]) -> None:
    signed = sign_document(statement(), keys.key(A_METHOD), CREATED)
    edit(signed)
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "mismatch"


def test_created_is_covered(keys: Keys) -> None:
    signed = sign_document(statement(), keys.key(A_METHOD), CREATED)
    signed["proof"]["created"] = "2025-07-04T01:00:01Z"
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "mismatch"


def test_verification_method_is_covered() -> None:
    # Both ids resolve to the same key, so only the signed proof options can tell them apart.
    key = generate_ed25519_key()
    signed = sign_document(statement(), ProofKey(A_METHOD, key), CREATED)
    signed["proof"]["verificationMethod"] = A_METHOD + "-2"
    assert reason_of(lambda: verify_document(signed, lambda _: key.public_key())) == "mismatch"


def test_proof_context_is_covered(keys: Keys) -> None:
    signed = sign_document(statement(), keys.key(A_METHOD), CREATED)
    signed["proof"]["@context"] = signed["proof"]["@context"][:1]
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "mismatch"
    signed["@context"] = signed["@context"][:1]  # now equal again, but not what was signed
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "mismatch"


def test_proof_context_on_a_document_without_one(keys: Keys) -> None:
    signed = sign_document(statement(), keys.key(A_METHOD), CREATED)
    del signed["@context"]
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "mismatch"


# --- refusal reasons ---------------------------------------------------------------------------


def signed_by_a(keys: Keys) -> dict[str, Any]:
    return sign_document(statement(), keys.key(A_METHOD), CREATED)


def test_missing(keys: Keys) -> None:
    assert reason_of(lambda: verify_document(statement(), keys.resolve)) == "missing"
    assert reason_of(lambda: verify_all(statement(), keys.resolve)) == "missing"


@pytest.mark.parametrize("empty", [[], None])
def test_missing_when_empty(keys: Keys, empty: object) -> None:
    document = statement() | {"proof": empty}
    assert reason_of(lambda: verify_document(document, keys.resolve)) == "missing"
    assert reason_of(lambda: verify_all(document, keys.resolve)) == "missing"


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: "not a proof",
        lambda p: [p, "not a proof"],
        lambda p: {k: v for k, v in p.items() if k != "created"},
        lambda p: {k: v for k, v in p.items() if k != "proofValue"},
        lambda p: {k: v for k, v in p.items() if k != "verificationMethod"},
        lambda p: p | {"created": 1751590800},
        lambda p: p | {"created": "2025-07-04"},
        lambda p: p | {"created": "2025-07-04T01:00:00"},
        lambda p: p | {"created": "2025-13-04T01:00:00Z"},
        lambda p: p | {"created": " 2025-07-04T01:00:00Z"},
        lambda p: p | {"verificationMethod": ""},
        lambda p: p | {"verificationMethod": ["x"]},
        lambda p: p | {"expires": "2026-07-04T01:00:00Z"},
        lambda p: p | {"previousProof": "urn:uuid:1"},
        lambda p: p | {"@context": 1.5},
        # proofValue: not 'z' + base58btc of exactly 64 bytes
        lambda p: p | {"proofValue": p["proofValue"][1:]},
        lambda p: p | {"proofValue": "u" + p["proofValue"][1:]},
        lambda p: p | {"proofValue": "z"},
        lambda p: p | {"proofValue": p["proofValue"][:-1] + "0"},
        lambda p: p | {"proofValue": "z" + base58btc_encode(b"\x01" * 63)},
        lambda p: p | {"proofValue": "z" + base58btc_encode(b"\x01" * 65)},
        lambda p: p | {"proofValue": "z" + base58btc_encode(b"\x00" + b"\x01" * 64)},
        lambda p: p | {"proofValue": "z" + "1" * 100_000},
        lambda p: p | {"proofValue": b"bytes"},
    ],
)
def test_malformed(keys: Keys, edit: Callable[[dict[str, Any]], object]) -> None:
    signed = signed_by_a(keys)
    signed["proof"] = edit(signed["proof"])
    assert reason_of(lambda: verify_all(signed, keys.resolve)) == "malformed"
    if not isinstance(signed["proof"], list):
        assert reason_of(lambda: verify_document(signed, keys.resolve)) == "malformed"


def test_document_must_be_an_object(keys: Keys) -> None:
    not_a_document: Any = [signed_by_a(keys)]
    assert reason_of(lambda: verify_document(not_a_document, keys.resolve)) == "malformed"


@pytest.mark.parametrize(
    "edit",
    [
        {"cryptosuite": "eddsa-rdfc-2022"},
        {"cryptosuite": "ecdsa-jcs-2019"},
        {"type": "Ed25519Signature2020"},
        {"type": "RsaSignature2017"},
    ],
)
def test_cryptosuite(keys: Keys, edit: dict[str, str]) -> None:
    signed = signed_by_a(keys)
    signed["proof"] |= edit
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "cryptosuite"


@pytest.mark.parametrize("purpose", ["authentication", "capabilityInvocation", ""])
def test_purpose(keys: Keys, purpose: str) -> None:
    signed = signed_by_a(keys)
    signed["proof"]["proofPurpose"] = purpose
    assert reason_of(lambda: verify_document(signed, keys.resolve)) == "purpose"


def test_unknown_key(keys: Keys) -> None:
    signed = signed_by_a(keys)
    assert reason_of(lambda: verify_document(signed, lambda _: None)) == "unknown_key"


def test_wrong_key_is_a_mismatch(keys: Keys) -> None:
    signed = signed_by_a(keys)
    other = generate_ed25519_key().public_key()
    assert reason_of(lambda: verify_document(signed, lambda _: other)) == "mismatch"


def test_error_carries_reason_and_detail(keys: Keys) -> None:
    with pytest.raises(ProofError) as caught:
        verify_document(statement(), keys.resolve)
    assert caught.value.reason == "missing"
    assert str(caught.value).startswith("missing: ")


# --- proof sets: co-signing a bilateral settlement ---------------------------------------------


def bilateral() -> dict[str, Any]:
    return {
        "type": "BilateralSettlement",
        "schema": "flattrfed.bilateral/1",
        "id": "https://a.example/settlement/2025-06/pair/a.example~b.example",
        "period": "2025-06",
        "net": {
            "payer": "https://a.example/actor",
            "payee": "https://b.example/actor",
            "amount": "16500",
        },
        "action": "pay",
    }


def test_co_signing_appends_an_independent_proof(keys: Keys) -> None:
    by_a = sign_document(bilateral(), keys.key(A_METHOD), CREATED)
    by_both = sign_document(by_a, keys.key(B_METHOD), CREATED + timedelta(hours=1))
    assert isinstance(by_both["proof"], list)
    assert [p["verificationMethod"] for p in by_both["proof"]] == [A_METHOD, B_METHOD]
    assert by_both["proof"][0] == by_a["proof"]  # A's proof is carried over untouched
    assert verify_all(by_both, keys.resolve) == [A_METHOD, B_METHOD]


def test_proof_sets_are_order_free(keys: Keys) -> None:
    by_b_first = sign_document(
        sign_document(bilateral(), keys.key(B_METHOD), CREATED), keys.key(A_METHOD), CREATED
    )
    assert verify_all(by_b_first, keys.resolve) == [B_METHOD, A_METHOD]
    by_b_first["proof"].reverse()
    assert verify_all(by_b_first, keys.resolve) == [A_METHOD, B_METHOD]


def test_separately_signed_copies_can_be_merged(keys: Keys) -> None:
    proof_a = sign_document(bilateral(), keys.key(A_METHOD), CREATED)["proof"]
    proof_b = sign_document(bilateral(), keys.key(B_METHOD), CREATED)["proof"]
    merged = bilateral() | {"proof": [proof_a, proof_b]}
    assert verify_all(merged, keys.resolve) == [A_METHOD, B_METHOD]


def test_each_proof_covers_the_document(keys: Keys) -> None:
    both = sign_document(
        sign_document(bilateral(), keys.key(A_METHOD), CREATED), keys.key(B_METHOD), CREATED
    )
    both["net"]["amount"] = "16501"
    assert reason_of(lambda: verify_all(both, keys.resolve)) == "mismatch"


def test_one_bad_proof_fails_the_set(keys: Keys) -> None:
    both = sign_document(
        sign_document(bilateral(), keys.key(A_METHOD), CREATED), keys.key(B_METHOD), CREATED
    )
    both["proof"][1]["created"] = "2025-07-04T01:00:01Z"
    assert reason_of(lambda: verify_all(both, keys.resolve)) == "mismatch"
    both["proof"][1] = "junk"
    assert reason_of(lambda: verify_all(both, keys.resolve)) == "malformed"


def test_verify_document_refuses_a_set_of_several(keys: Keys) -> None:
    both = sign_document(
        sign_document(bilateral(), keys.key(A_METHOD), CREATED), keys.key(B_METHOD), CREATED
    )
    assert reason_of(lambda: verify_document(both, keys.resolve)) == "malformed"
    single_in_list = bilateral() | {"proof": [both["proof"][0]]}
    assert verify_document(single_in_list, keys.resolve) == A_METHOD


def test_the_same_signer_twice(keys: Keys) -> None:
    by_a = sign_document(bilateral(), keys.key(A_METHOD), CREATED)
    with pytest.raises(ValueError, match="already signed"):
        sign_document(by_a, keys.key(A_METHOD), CREATED + timedelta(seconds=1))
    again = sign_document(bilateral(), keys.key(A_METHOD), CREATED + timedelta(seconds=1))
    doubled = bilateral() | {"proof": [by_a["proof"], again["proof"]]}
    assert reason_of(lambda: verify_all(doubled, keys.resolve)) == "malformed"


def test_a_dropped_proof_leaves_the_other_valid(keys: Keys) -> None:
    # The set is not itself signed: callers must check *which* signers verify_all returns.
    both = sign_document(
        sign_document(bilateral(), keys.key(A_METHOD), CREATED), keys.key(B_METHOD), CREATED
    )
    both["proof"].pop()
    assert verify_all(both, keys.resolve) == [A_METHOD]


def test_proof_sets_are_capped(keys: Keys) -> None:
    proof = sign_document(bilateral(), keys.key(A_METHOD), CREATED)["proof"]
    crowded = bilateral() | {"proof": [proof] * (MAX_PROOFS + 1)}
    assert reason_of(lambda: verify_all(crowded, keys.resolve)) == "malformed"


def test_signing_over_a_junk_proof_member_is_refused(keys: Keys) -> None:
    with pytest.raises(ValueError, match="proof"):
        sign_document(bilateral() | {"proof": "junk"}, keys.key(A_METHOD), CREATED)


# --- Multikey ----------------------------------------------------------------------------------


def test_multikey_round_trip() -> None:
    public = generate_ed25519_key().public_key()
    text = multikey_from_public(public)
    assert text.startswith("z6Mk")
    assert len(text) == 48
    assert public_from_multikey(text) == public


def test_multikey_decodes_to_the_ed25519_multicodec() -> None:
    raw = base58btc_decode(W3C_PUBLIC_MULTIBASE[1:])
    assert raw[:2] == b"\xed\x01"
    assert len(raw) == 34


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "z",
        W3C_PUBLIC_MULTIBASE[1:],  # no multibase prefix
        "u" + W3C_PUBLIC_MULTIBASE[1:],  # base64url prefix
        W3C_PUBLIC_MULTIBASE + "1",  # one byte too many
        W3C_PUBLIC_MULTIBASE[:-1],  # one digit short
        W3C_PUBLIC_MULTIBASE[:-1] + "0",  # '0' is not base58
        "z" + base58btc_encode(b"\xec\x01" + b"\x01" * 32),  # x25519-pub
        "z" + base58btc_encode(b"\x80\x26" + b"\x01" * 32),  # an ed25519 *private* key
        "z" + base58btc_encode(b"\xed\x01" + b"\x01" * 31),
        "z" + base58btc_encode(b"\x00\xed\x01" + b"\x01" * 32),
        "z" + "1" * 10_000,
    ],
)
def test_multikey_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        public_from_multikey(bad)
