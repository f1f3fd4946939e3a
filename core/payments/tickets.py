"""Probabilistic micropayment tickets in Livepeer's scheme (pure: no I/O).

An orchestrator O publishes :class:`TicketParams`; a gateway B signs :class:`Ticket` s made
from them and sends them, as a :class:`Payment`, in the :data:`PAYMENT_HEADER` of each job.
A ticket is worth its expected value ``face_value * win_prob / 2**256`` whether it wins or
not; the few that win are redeemed for their face value (see ``docs/payments.md``).

The ticket hash, the signature and the winning rule are those of Livepeer's TicketBroker
contract and go-livepeer's ``pm`` package, so a ticket signed here would be valid there.
Off-chain differences: ``expires_at`` (unix time) stands in for Livepeer's expiration block,
and ``creation_round`` / ``creation_round_block_hash`` are set by the off-chain issuer
(round 0 and ``keccak256(uint256(seed))``), not read from the RoundsManager.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any

from eth_hash.auto import keccak
from eth_utils import is_address, to_checksum_address

from core.errors import OrchardError

__all__ = [
    "BALANCE_HEADER",
    "MAX_TICKETS",
    "MAX_UINT256",
    "PAYMENT_HEADER",
    "WIN_PROB_DENOMINATOR",
    "Payment",
    "PaymentRejected",
    "RejectReason",
    "Ticket",
    "TicketParams",
    "check_address",
    "decode_header",
    "encode_header",
    "expected_value",
    "is_winning",
    "parse_price",
    "recover_signer",
    "sign",
]

#: Livepeer's header is ``Livepeer-Payment`` with a base64 protobuf ``net.Payment``; ours
#: carries the same fields as base64url of compact JSON (see :func:`encode_header`).
PAYMENT_HEADER = "Livepeer-Payment"
#: Orchard's own response header: the sender's balance at O after the job, ``"num/den"`` wei
#: (``Receipt.balance``), for ``TicketSender.sync_credit``. Livepeer has no such header.
BALANCE_HEADER = "Orchard-Balance"
MAX_UINT256 = 2**256 - 1
#: The winning rule is ``uint256(keccak256(sig ++ rand)) < win_prob``: the probability of a
#: win is exactly ``win_prob / 2**256``. (go-livepeer divides by ``2**256 - 1`` for its
#: expected values; the difference is below one part in 10**77.)
WIN_PROB_DENOMINATOR = 2**256
#: Tickets in one payment at most: each costs a signature recovery on O (milliseconds) and
#: ~150 bytes of header; uvicorn (h11) refuses request heads above 16 KiB.
MAX_TICKETS = 32
#: A header longer than this is refused before it is decoded.
MAX_HEADER_CHARS = 12_000

_ZERO32 = bytes(32)
# "num/den" or a plain decimal, without exponents (Fraction("1e99999999") would take ages).
_PRICE_TEXT = re.compile(r"[0-9]{1,160}(?:/[0-9]{1,160}|\.[0-9]{1,160})?")


class RejectReason(StrEnum):
    """Why O refused a payment: lets B act (refresh params, top up, resend) without parsing
    the message."""

    MALFORMED = "malformed"
    UNKNOWN_PARAMS = "unknown_params"
    TAMPERED_PARAMS = "tampered_params"
    EXPIRED_PARAMS = "expired_params"
    WRONG_RECIPIENT = "wrong_recipient"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED_NONCE = "replayed_nonce"
    PRICE_TOO_LOW = "price_too_low"
    INSUFFICIENT_DEPOSIT = "insufficient_deposit"
    INSUFFICIENT_BALANCE = "insufficient_balance"


class PaymentRejected(OrchardError):
    """O refused a payment; nothing in the ledger changed. ``status`` is the HTTP code:
    400 malformed or invalid, 401 a signature that is not the sender's, 402 not enough value.
    """

    def __init__(
        self,
        status: int,
        msg: str,
        reason: RejectReason = RejectReason.MALFORMED,
        missing: Fraction | None = None,
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.reason = reason
        #: For insufficient_balance: the wei the payment lacked.
        self.missing = missing


# -- field checks ----------------------------------------------------------------------------


def check_address(value: Any, name: str = "address") -> str:
    """``value`` as a checksummed address; ValueError naming ``name`` when it is not one."""
    if not isinstance(value, str) or not is_address(value) or len(value) != 42:
        raise ValueError(f"{name} must be a 0x-prefixed 20-byte hex address, not {value!r}")
    return str(to_checksum_address(value))


def _uint(value: Any, name: str, bits: int = 256) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ValueError(f"{name} must be an integer from 0 to 2**{bits} - 1, not {value!r}")
    return value


def _bytes(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise ValueError(f"{name} must be {size} bytes")
    return bytes(value)


def _int_text(value: Any, name: str) -> int:
    """A JSON integer given as a decimal string (an int is accepted too)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 78:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be a decimal integer string, not {value!r}")


def _hex_bytes(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 2 + 2 * size:
        raise ValueError(f"{name} must be 0x followed by {2 * size} hex digits")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ValueError(f"{name} must be 0x followed by {2 * size} hex digits") from None


def parse_price(value: Any) -> Fraction:
    """A non-negative price from a Fraction, an int, ``"num/den"`` or a decimal string."""
    if isinstance(value, Fraction | int) and not isinstance(value, bool):
        price = Fraction(value)
    elif isinstance(value, str) and _PRICE_TEXT.fullmatch(value):
        try:
            price = Fraction(value)
        except ZeroDivisionError:
            raise ValueError(f"a price cannot have a zero denominator ({value!r})") from None
    else:
        raise ValueError(f"a price must be 'num/den' or a decimal string, not {value!r}")
    if price < 0:
        raise ValueError(f"a price cannot be negative ({value!r})")
    return price


def _fraction_text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


# -- params, tickets -------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketParams:
    """What O publishes for B to make tickets from.

    ``expires_at`` is unix time: the off-chain stand-in for Livepeer's ``ExpirationBlock``.
    ``creation_round`` / ``creation_round_block_hash`` become the ticket's auxData; off
    chain O sets round 0 and ``keccak256(uint256(seed))`` (a non-zero value, so the hash
    always includes the 64 bytes of auxData, as on chain).
    """

    recipient: str
    face_value: int
    win_prob: int
    recipient_rand_hash: bytes
    seed: int
    expires_at: float
    creation_round: int = 0
    creation_round_block_hash: bytes = _ZERO32

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", check_address(self.recipient, "recipient"))
        _uint(self.face_value, "face_value")
        _uint(self.win_prob, "win_prob")
        _bytes(self.recipient_rand_hash, "recipient_rand_hash", 32)
        _uint(self.seed, "seed")
        at = self.expires_at
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise ValueError(f"expires_at must be a unix time, not {at!r}")
        object.__setattr__(self, "expires_at", float(self.expires_at))
        _uint(self.creation_round, "creation_round")
        _bytes(self.creation_round_block_hash, "creation_round_block_hash", 32)

    @property
    def expected_value(self) -> Fraction:
        """The worth of one ticket made from these params, in wei."""
        return expected_value(self.face_value, self.win_prob)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: integers as decimal strings, bytes as 0x hex, ``expires_at`` a number."""
        return {
            "recipient": self.recipient,
            "face_value": str(self.face_value),
            "win_prob": str(self.win_prob),
            "recipient_rand_hash": "0x" + self.recipient_rand_hash.hex(),
            "seed": str(self.seed),
            "expires_at": self.expires_at,
            "creation_round": str(self.creation_round),
            "creation_round_block_hash": "0x" + self.creation_round_block_hash.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> TicketParams:
        """The inverse of :meth:`to_json` (a dict or its JSON text); ValueError when wrong."""
        obj = json.loads(data) if isinstance(data, str) else data
        if not isinstance(obj, dict):
            raise ValueError("ticket params must be a JSON object")
        expires_at = obj.get("expires_at")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            raise ValueError(f"expires_at must be a number (unix time), not {expires_at!r}")
        return cls(
            recipient=obj.get("recipient"),  # type: ignore[arg-type]  # checked on construction
            face_value=_int_text(obj.get("face_value"), "face_value"),
            win_prob=_int_text(obj.get("win_prob"), "win_prob"),
            recipient_rand_hash=_hex_bytes(
                obj.get("recipient_rand_hash"), "recipient_rand_hash", 32
            ),
            seed=_int_text(obj.get("seed"), "seed"),
            expires_at=float(expires_at),
            creation_round=_int_text(obj.get("creation_round", "0"), "creation_round"),
            creation_round_block_hash=_hex_bytes(
                obj.get("creation_round_block_hash", "0x" + "00" * 32),
                "creation_round_block_hash",
                32,
            ),
        )


@dataclass(frozen=True)
class Ticket:
    """One lottery ticket, as Livepeer's TicketBroker sees it."""

    recipient: str
    sender: str
    face_value: int
    win_prob: int
    sender_nonce: int
    recipient_rand_hash: bytes
    creation_round: int = 0
    creation_round_block_hash: bytes = _ZERO32

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", check_address(self.recipient, "recipient"))
        object.__setattr__(self, "sender", check_address(self.sender, "sender"))
        _uint(self.face_value, "face_value")
        _uint(self.win_prob, "win_prob")
        _uint(self.sender_nonce, "sender_nonce")
        _bytes(self.recipient_rand_hash, "recipient_rand_hash", 32)
        _uint(self.creation_round, "creation_round")
        _bytes(self.creation_round_block_hash, "creation_round_block_hash", 32)

    @classmethod
    def from_params(cls, params: TicketParams, sender: str, sender_nonce: int) -> Ticket:
        return cls(
            recipient=params.recipient,
            sender=sender,
            face_value=params.face_value,
            win_prob=params.win_prob,
            sender_nonce=sender_nonce,
            recipient_rand_hash=params.recipient_rand_hash,
            creation_round=params.creation_round,
            creation_round_block_hash=params.creation_round_block_hash,
        )

    @property
    def aux_data(self) -> bytes:
        """``uint256(creationRound) ++ creationRoundBlockHash``; empty when both are zero,
        as go-livepeer encodes it."""
        if self.creation_round == 0 and self.creation_round_block_hash == _ZERO32:
            return b""
        return self.creation_round.to_bytes(32, "big") + self.creation_round_block_hash

    def hash(self) -> bytes:
        """keccak256 of Solidity ``abi.encodePacked(recipient, sender, faceValue, winProb,
        senderNonce, recipientRandHash, auxData)``, as TicketBroker's ``getTicketHash``."""
        packed = b"".join(
            (
                bytes.fromhex(self.recipient[2:]),
                bytes.fromhex(self.sender[2:]),
                self.face_value.to_bytes(32, "big"),
                self.win_prob.to_bytes(32, "big"),
                self.sender_nonce.to_bytes(32, "big"),
                self.recipient_rand_hash,
                self.aux_data,
            )
        )
        return bytes(keccak(packed))

    @property
    def expected_value(self) -> Fraction:
        return expected_value(self.face_value, self.win_prob)


# -- signatures, winning, value --------------------------------------------------------------


def sign(ticket: Ticket, account: Any) -> bytes:
    """B's signature: an Ethereum personal-message signature (EIP-191, go-livepeer's
    ``eth.Sign`` over ``accounts.TextHash``) of the 32-byte ticket hash; 65 bytes r, s, v
    with v = 27 or 28. ``account`` is an eth_account ``LocalAccount``."""
    from eth_account.messages import encode_defunct  # lazy: eth_account takes ~0.4 s to import

    signed = account.sign_message(encode_defunct(primitive=ticket.hash()))
    return bytes(signed.signature)


def recover_signer(ticket: Ticket, sig: bytes) -> str:
    """The checksummed address that signed ``ticket``; ValueError when ``sig`` recovers
    to no key. v may be 27/28 or 0/1."""
    if len(sig) != 65:
        raise ValueError(f"a ticket signature is 65 bytes, not {len(sig)}")
    if sig[64] in (0, 1):
        sig = sig[:64] + bytes([sig[64] + 27])
    from eth_account import Account
    from eth_account.messages import encode_defunct

    try:
        address = Account.recover_message(encode_defunct(primitive=ticket.hash()), signature=sig)
    except Exception as exc:  # eth_keys raises several types for an invalid signature
        raise ValueError(f"the signature recovers to no key ({exc})") from None
    return str(address)


def is_winning(sig: bytes, recipient_rand: int, win_prob: int) -> bool:
    """TicketBroker's rule: ``uint256(keccak256(abi.encodePacked(sig, uint256(rand))))
    < winProb``."""
    digest = keccak(bytes(sig) + recipient_rand.to_bytes(32, "big"))
    return int.from_bytes(digest, "big") < win_prob


def expected_value(face_value: int, win_prob: int) -> Fraction:
    """A ticket's worth in wei: ``face_value * win_prob / 2**256``, exact."""
    return Fraction(face_value * win_prob, WIN_PROB_DENOMINATOR)


# -- payment and its header ------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    """What B sends with a job: tickets sharing ``ticket_params``, each ``(nonce, sig)``.

    ``expected_price`` is the price per pixel (wei) B agreed to; no tickets means "take
    the fee from my balance" (allowed only under params this sender already paid under).
    """

    ticket_params: TicketParams
    sender: str
    expected_price: Fraction
    tickets: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", check_address(self.sender, "sender"))
        object.__setattr__(self, "expected_price", parse_price(self.expected_price))
        items = tuple((_uint(n, "sender_nonce"), _bytes(s, "sig", 65)) for n, s in self.tickets)
        object.__setattr__(self, "tickets", items)

    def to_tickets(self) -> list[Ticket]:
        return [Ticket.from_params(self.ticket_params, self.sender, n) for n, _ in self.tickets]

    def to_json(self) -> dict[str, Any]:
        return {
            "ticket_params": self.ticket_params.to_json(),
            "sender": self.sender,
            "expected_price": _fraction_text(self.expected_price),
            "tickets": [{"sender_nonce": str(n), "sig": "0x" + s.hex()} for n, s in self.tickets],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Payment:
        if not isinstance(data, dict):
            raise ValueError("a payment must be a JSON object")
        tickets = data.get("tickets", [])
        if not isinstance(tickets, list):
            raise ValueError("tickets must be a list")
        if len(tickets) > MAX_TICKETS:
            raise ValueError(f"{len(tickets)} tickets in one payment; at most {MAX_TICKETS}")
        items = []
        for t in tickets:
            if not isinstance(t, dict):
                raise ValueError("each ticket must be an object {sender_nonce, sig}")
            items.append(
                (
                    _int_text(t.get("sender_nonce"), "sender_nonce"),
                    _hex_bytes(t.get("sig"), "sig", 65),
                )
            )
        return cls(
            ticket_params=TicketParams.from_json(data.get("ticket_params")),  # type: ignore[arg-type]
            sender=data.get("sender"),  # type: ignore[arg-type]
            expected_price=parse_price(data.get("expected_price")),
            tickets=tuple(items),
        )


def encode_header(payment: Payment) -> str:
    """The :data:`PAYMENT_HEADER` value: base64url (no padding) of compact JSON."""
    text = json.dumps(payment.to_json(), separators=(",", ":"), allow_nan=False)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode_header(text: str) -> Payment:
    """Parse a :data:`PAYMENT_HEADER` value; PaymentRejected(400) saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise PaymentRejected(400, f"the {PAYMENT_HEADER} header is empty")
    if len(text) > MAX_HEADER_CHARS:
        raise PaymentRejected(
            400,
            f"the {PAYMENT_HEADER} header is {len(text)} characters; at most {MAX_HEADER_CHARS}",
        )
    raw = text.strip()
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        obj = json.loads(data)
    except (binascii.Error, ValueError, RecursionError):
        raise PaymentRejected(
            400, f"the {PAYMENT_HEADER} header is not base64url-encoded JSON"
        ) from None
    try:
        return Payment.from_json(obj)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PaymentRejected(400, f"the {PAYMENT_HEADER} header is invalid: {exc}") from None
