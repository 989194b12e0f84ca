"""A fake Fedify-based server on loopback: Multikey actors, RFC 9421 first, then the double knock.

What it serves, as a Fedify app (Hollo, Ghost, hackers.pub…) does:

- actor documents from `tests/fixtures/fedify_actor.json`: `publicKey` (a CryptographicKey,
  RSA, `#main-key`) plus `assertionMethod` Multikeys (the same RSA key as `#main-key`, and an
  Ed25519 key `#key-2`), `endpoints` typed `as:Endpoints`, the data-integrity, DID and multikey
  contexts; WebFinger and NodeInfo 2.1; inboxes that check deliveries like the Mastodon fake.

How it sends, as Fedify ≥ 1.6 does (`doubleKnock` in `packages/fedify/src/sig/http.ts`):

- first knock RFC 9421: `Content-Digest: sha-256=:…:` and
  `Signature-Input: sig1=("@method" "@target-uri" "@authority" "host" "date" "content-digest");
  alg="rsa-v1_5-sha256";keyid="…#main-key";created=…`, `Signature: sig1=:…:`;
- on any answer ≥ 400 it re-signs with draft-cavage over every header it sends,
  `(request-target) content-type date digest host`, with `Digest: SHA-256=…`, and retries once;
- it remembers per origin which spec worked and starts there next time.

Activities may carry a FEP-8b32 `proof` (DataIntegrityProof, eddsa-jcs-2022, by `#key-2`) and an
LD `signature` (RsaSignature2017, by `#main-key`), as Fedify attaches when an actor has both key
types. The proof is a real Ed25519 signature over JCS-style canonical JSON; the LD signature's
value is not URDNA2015-based (see FakeMastodon.ld_signed). flattrfed must ignore both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from tests.fakes.mastodon import (
    ACTIVITY_JSON,
    AS_CONTEXT,
    Account,
    FakePeer,
    Sent,
    cavage_signature,
    http_date,
    load_fixture,
    public_pem,
    rsa_sign,
    sha256_base64,
)
from tests.harness.instances import Federation

Spec = Literal["rfc9421", "draft-cavage"]
RFC9421_COMPONENTS = ("@method", "@target-uri", "@authority", "host", "date", "content-digest")
FEDIFY_CAVAGE_HEADERS = ("(request-target)", "content-type", "date", "digest", "host")
DATA_INTEGRITY_CONTEXT = "https://w3id.org/security/data-integrity/v1"
IDENTITY_CONTEXT = "https://w3id.org/identity/v1"

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Multicodec prefixes (unsigned varints) of the public key types in a Multikey.
_RSA_PUB = bytes([0x85, 0x24])  # 0x1205 rsa-pub, PKCS#1 DER
_ED25519_PUB = bytes([0xED, 0x01])  # 0xed ed25519-pub


def base58btc(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, remainder = divmod(number, 58)
        digits = _BASE58[remainder] + digits
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + digits


def multibase(prefix: bytes, key_bytes: bytes) -> str:
    return "z" + base58btc(prefix + key_bytes)


def jcs(value: Any) -> bytes:
    """Canonical JSON close enough to RFC 8785 for the ASCII documents these fakes sign."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Knock:
    """One attempt of a delivery: which spec signed it and what the inbox answered."""

    spec: Spec
    status: int
    inbox: str
    answer: str = ""


class FakeFedify(FakePeer):
    """A Fedify app: double-knocking deliveries, Multikey actors, proofs on activities."""

    software = "hollo"
    software_version = "0.6.0"
    nodeinfo_versions = ("2.1",)
    sign_fetches = False  # Fedify's default document loader fetches unsigned

    def __init__(self, federation: Federation, name: str = "fedify") -> None:
        super().__init__(federation, name)
        self.knocks: list[Knock] = []
        # Make every RFC 9421 signature unverifiable (one flipped bit): forces the second knock.
        self.first_knock_broken = False
        self.first_knock: Spec = "rfc9421"
        self._spec_by_origin: dict[str, Spec] = {}

    def user_agent(self) -> str:
        return f"Fedify/2.3.6 (Deno/2.4.0; +{self.base_url}/)"

    def actor_document(self, account: Account) -> dict[str, Any]:
        assert account.ed25519 is not None
        rsa_der = account.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        ed_raw = account.ed25519.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        document = load_fixture(
            "fedify_actor.json",
            base=self.base_url,
            username=account.username,
            name=account.name,
            type=account.type,
            pem=public_pem(account.key),
            rsa_multibase=multibase(_RSA_PUB, rsa_der),
            ed25519_multibase=multibase(_ED25519_PUB, ed_raw),
        )
        assert isinstance(document, dict)
        return document

    # --- activities ---

    def new_id(self, account: Account, what: str) -> str:
        return f"{account.uri}/{what}/{uuid.uuid4()}"

    def like_activity(
        self, account: Account, object_uri: str, *, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "@context": [AS_CONTEXT, DATA_INTEGRITY_CONTEXT],
            "id": self.new_id(account, "likes"),
            "type": "Like",
            "actor": account.uri,
            "object": object_uri,
            **(extra or {}),
        }

    def with_proof(self, account: Account, activity: dict[str, Any]) -> dict[str, Any]:
        """A FEP-8b32 DataIntegrityProof (eddsa-jcs-2022) by the actor's Ed25519 key."""
        assert account.ed25519 is not None
        config = {
            "@context": activity["@context"],
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-jcs-2022",
            "verificationMethod": f"{account.uri}#key-2",
            "proofPurpose": "assertionMethod",
            "created": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        data = hashlib.sha256(jcs(config)).digest() + hashlib.sha256(jcs(activity)).digest()
        proof = {key: value for key, value in config.items() if key != "@context"}
        proof["proofValue"] = "z" + base58btc(account.ed25519.sign(data))
        return {**activity, "proof": proof}

    def with_ld_signature(self, account: Account, activity: dict[str, Any]) -> dict[str, Any]:
        """An RsaSignature2017 `signature` block, with the identity context Fedify adds."""
        context = activity["@context"]
        contexts = context if isinstance(context, list) else [context]
        options = {
            "type": "RsaSignature2017",
            "creator": account.key_id,
            "created": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        value = base64.b64encode(rsa_sign(account.key, jcs(options) + jcs(activity))).decode()
        return {
            **activity,
            "@context": [IDENTITY_CONTEXT, *contexts],
            "signature": {**options, "signatureValue": value},
        }

    # --- delivery with the double knock ---

    async def like(
        self,
        account: Account,
        object_uri: str,
        inbox: str,
        *,
        extra: Mapping[str, Any] | None = None,
        proofs: bool = True,
    ) -> Sent:
        """Like `object_uri`, with a proof and an LD signature unless `proofs` is False."""
        activity = self.like_activity(account, object_uri, extra=extra)
        if proofs:
            activity = self.with_ld_signature(account, self.with_proof(account, activity))
        return await self.deliver(account, inbox, activity)

    async def follow(
        self, account: Account, target: Mapping[str, Any], *, proofs: bool = True
    ) -> Sent:
        activity: dict[str, Any] = {
            "@context": [AS_CONTEXT, DATA_INTEGRITY_CONTEXT],
            "id": self.new_id(account, "follows"),
            "type": "Follow",
            "actor": account.uri,
            "object": str(target["id"]),
        }
        if proofs:
            activity = self.with_ld_signature(account, self.with_proof(account, activity))
        return await self.deliver(account, str(target["inbox"]), activity)

    async def deliver(self, account: Account, inbox: str, activity: dict[str, Any]) -> Sent:
        """Send as Fedify does: the remembered (or first-knock) spec, then the other on ≥ 400."""
        body = json.dumps(activity).encode()
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(inbox))
        spec = self._spec_by_origin.get(origin, self.first_knock)
        status, text = await self.knock(spec, account, inbox, body)
        if status >= 400:
            spec = "draft-cavage" if spec == "rfc9421" else "rfc9421"
            status, text = await self.knock(spec, account, inbox, body)
        if 200 <= status < 300:
            self._spec_by_origin[origin] = spec
        return Sent(activity, status, text)

    async def knock(self, spec: Spec, account: Account, inbox: str, body: bytes) -> tuple[int, str]:
        """One signed POST of `body` to `inbox`, recorded in `knocks`."""
        if spec == "rfc9421":
            headers = self.rfc9421_headers(account, inbox, body)
        else:
            headers = self.cavage_headers(account, inbox, body)
        status, text = await self.post_raw(inbox, body, headers)
        self.knocks.append(Knock(spec, status, inbox, text))
        return status, text

    def rfc9421_headers(self, account: Account, url: str, body: bytes) -> dict[str, str]:
        authority = urlsplit(url).netloc
        now = self.now()
        headers = {
            "Host": authority,
            "Date": http_date(now),
            "Content-Type": ACTIVITY_JSON,
            "Content-Digest": f"sha-256=:{sha256_base64(body)}:",
            "User-Agent": self.user_agent(),
        }
        values = {
            "@method": "POST",
            "@target-uri": url,
            "@authority": authority,
            "host": headers["Host"],
            "date": headers["Date"],
            "content-digest": headers["Content-Digest"],
        }
        params = (
            "(" + " ".join(f'"{name}"' for name in RFC9421_COMPONENTS) + ")"
            f';alg="rsa-v1_5-sha256";keyid="{account.key_id}";created={int(now.timestamp())}'
        )
        lines = [f'"{name}": {values[name]}' for name in RFC9421_COMPONENTS]
        lines.append(f'"@signature-params": {params}')
        signature = rsa_sign(account.key, "\n".join(lines).encode("ascii"))
        if self.first_knock_broken:
            signature = bytes([signature[0] ^ 0x01]) + signature[1:]
        headers["Signature-Input"] = f"sig1={params}"
        headers["Signature"] = f"sig1=:{base64.b64encode(signature).decode()}:"
        return headers

    def cavage_headers(self, account: Account, url: str, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": ACTIVITY_JSON,
            "Date": http_date(self.now()),
            "Digest": f"SHA-256={sha256_base64(body)}",
            "Host": urlsplit(url).netloc,
            "User-Agent": self.user_agent(),
        }
        headers["Signature"] = cavage_signature(
            key=account.key,
            key_id=account.key_id,
            method="POST",
            url=url,
            headers=headers,
            covered=FEDIFY_CAVAGE_HEADERS,
        )
        return headers
