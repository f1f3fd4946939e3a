"""The ticket scheme: hash, signature, winning rule, value, and the payment header."""

from __future__ import annotations

import base64
import dataclasses
import json
from fractions import Fraction

import pytest
from Crypto.Hash import keccak as pycryptodome_keccak
from eth_abi.packed import encode_packed
from eth_account import Account
from eth_keys import keys
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from core.payments.tickets import (
    MAX_TICKETS,
    PAYMENT_HEADER,
    Payment,
    PaymentRejected,
    RejectReason,
    Ticket,
    TicketParams,
    decode_header,
    encode_header,
    expected_value,
    is_winning,
    recover_signer,
    sign,
)

ZERO = "0x" + "00" * 20


def keccak256(data: bytes) -> bytes:
    """An independent keccak-256 (pycryptodome, not eth_hash's backend choice)."""
    return pycryptodome_keccak.new(digest_bits=256, data=data).digest()


def zero_ticket(**kw: object) -> Ticket:
    fields: dict[str, object] = {
        "recipient": ZERO,
        "sender": ZERO,
        "face_value": 0,
        "win_prob": 0,
        "sender_nonce": 0,
        "recipient_rand_hash": bytes(32),
    }
    return Ticket(**{**fields, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [  # go-livepeer's pm/ticket_test.go TestHash vectors (tickets without auxData)
        (
            {"sender_nonce": 2**64 - 1},
            "24d4264d5ea56ba4362c8f535308005b2df1f9f77c34b4a61f6b5c3bef151b53",
        ),
        ({"sender_nonce": 1}, "ce0918ba94518293e9712effbe5fca4f1f431089833a5b8c257cb1e024595f68"),
        (
            {"face_value": 1, "win_prob": 500},
            "87ef13f2d37e4d5352a01d3c77b8179d80e0887f1953bfabfd0bfd7b0f689ddd",
        ),
        (
            {"face_value": 500, "win_prob": 1},
            "aa4b35071043587992ac8b9dd1b2cf1d8311130e6458cf0b2342484e21af5f5b",
        ),
        (
            {"recipient": "0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F"},
            "81e353ae39046e2b77b9f996abbaeed527fda559b61ef90f299c4499dd508ccc",
        ),
        (
            {
                "recipient_rand_hash": bytes.fromhex(
                    "41b1a0649752af1b28b3dc29a1556eee781e4a4c3a1f7f53f90fa834de098c4d"
                )
            },
            "be5eaf9a49a39540b9bb02f1a21904f61324a29819e2c032824bfaa10c100b17",
        ),
    ],
)
def test_hash_matches_go_livepeer(fields: dict[str, object], expected: str) -> None:
    assert zero_ticket(**fields).hash().hex() == expected


def test_hash_is_solidity_encode_packed_with_aux_data() -> None:
    ticket = Ticket(
        recipient="0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F",
        sender="0x" + "ab" * 20,
        face_value=10**17,
        win_prob=2**255 + 12345,
        sender_nonce=7,
        recipient_rand_hash=bytes(range(32)),
        creation_round=2874,
        creation_round_block_hash=bytes(range(32, 64)),
    )
    packed = encode_packed(
        ["address", "address", "uint256", "uint256", "uint256", "bytes32", "uint256", "bytes32"],
        [
            ticket.recipient,
            ticket.sender,
            ticket.face_value,
            ticket.win_prob,
            ticket.sender_nonce,
            ticket.recipient_rand_hash,
            ticket.creation_round,
            ticket.creation_round_block_hash,
        ],
    )
    assert len(ticket.aux_data) == 64
    assert ticket.hash() == keccak256(packed)


def test_sign_and_recover_with_real_keys() -> None:
    alice, bob = Account.from_key("0x" + "44" * 32), Account.from_key("0x" + "55" * 32)
    ticket = zero_ticket(sender=alice.address, face_value=5, win_prob=9, sender_nonce=3)
    sig = sign(ticket, alice)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert recover_signer(ticket, sig) == alice.address
    assert recover_signer(ticket, sig[:64] + bytes([sig[64] - 27])) == alice.address  # v 0/1
    assert recover_signer(ticket, sign(ticket, bob)) == bob.address
    # A personal-message (EIP-191) signature over the 32-byte hash, as go-livepeer's eth.Sign.
    prefixed = keccak256(b"\x19Ethereum Signed Message:\n32" + ticket.hash())
    key = keys.Signature(sig[:64] + bytes([sig[64] - 27])).recover_public_key_from_msg_hash(
        prefixed
    )
    assert key.to_checksum_address() == alice.address
    other = dataclasses.replace(ticket, sender_nonce=4)
    assert recover_signer(other, sig) != alice.address
    with pytest.raises(ValueError, match="65 bytes"):
        recover_signer(ticket, sig[:64])


def test_is_winning_agrees_with_an_independent_computation() -> None:
    alice = Account.from_key("0x" + "44" * 32)
    rand = 0x1234567890ABCDEF << 100
    wins = 0
    for nonce in range(1, 200):
        sig = sign(zero_ticket(sender=alice.address, sender_nonce=nonce), alice)
        value = int.from_bytes(keccak256(encode_packed(["bytes", "uint256"], [sig, rand])), "big")
        win_prob = 2**256 // 4
        assert is_winning(sig, rand, win_prob) is (value < win_prob)
        assert is_winning(sig, rand, value) is False and is_winning(sig, rand, value + 1)
        wins += is_winning(sig, rand, win_prob)
    assert 20 < wins < 90  # about a quarter of 199
    assert not is_winning(sig, rand, 0)


def test_expected_value_is_exact() -> None:
    assert expected_value(1000, 2**255) == 500
    assert expected_value(3, 1) == Fraction(3, 2**256)
    assert expected_value(10**18, 2**256 // 10) < Fraction(10**17)


def params(**kw: object) -> TicketParams:
    fields: dict[str, object] = {
        "recipient": "0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F",
        "face_value": 10**15,
        "win_prob": 2**250,
        "recipient_rand_hash": bytes(range(32)),
        "seed": 2**200 + 1,
        "expires_at": 1_750_000_600.25,
        "creation_round": 0,
        "creation_round_block_hash": bytes(range(1, 33)),
    }
    return TicketParams(**{**fields, **kw})  # type: ignore[arg-type]


def test_params_json_round_trip_uses_strings_and_hex() -> None:
    p = params()
    data = p.to_json()
    assert data["face_value"] == str(10**15) and data["seed"] == str(2**200 + 1)
    assert data["recipient_rand_hash"] == "0x" + bytes(range(32)).hex()
    assert TicketParams.from_json(data) == p
    assert TicketParams.from_json(json.dumps(data)) == p
    with pytest.raises(ValueError, match="face_value"):
        TicketParams.from_json({**data, "face_value": "-1"})
    with pytest.raises(ValueError, match="recipient_rand_hash"):
        TicketParams.from_json({**data, "recipient_rand_hash": "0x12"})
    with pytest.raises(ValueError, match="expires_at"):
        TicketParams.from_json({**data, "expires_at": "soon"})


def test_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="recipient"):
        params(recipient="0x1234")
    with pytest.raises(ValueError, match="win_prob"):
        params(win_prob=2**256)
    with pytest.raises(ValueError, match="expires_at"):
        params(expires_at=float("inf"))
    assert params(recipient="0x73aed7b5deb30222fa896f399d46cc99c7bee57f").recipient == (
        "0x73AEd7b5dEb30222fa896f399d46cC99c7BEe57F"
    )


def test_header_round_trip_and_name() -> None:
    assert PAYMENT_HEADER == "Livepeer-Payment"
    payment = Payment(params(), "0x" + "ab" * 20, Fraction(7, 3), ((1, b"\x01" * 65),))
    text = encode_header(payment)
    assert "=" not in text and text.isascii()
    data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    assert data["expected_price"] == "7/3" and data["tickets"][0]["sender_nonce"] == "1"
    assert decode_header(text) == payment
    decimal = dict(data, expected_price="2.5")
    raw = base64.urlsafe_b64encode(json.dumps(decimal).encode()).decode()
    assert decode_header(raw).expected_price == Fraction(5, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("!!!not base64!!!", "not base64url-encoded JSON"),
        (base64.urlsafe_b64encode(b"[1, 2]").decode(), "must be a JSON object"),
        (base64.urlsafe_b64encode(b'{"sender": "0x12"}').decode(), "invalid"),
        ("A" * 20_000, "at most"),
        (base64.urlsafe_b64encode(b"[" * 8000).decode(), "not base64url-encoded JSON"),
    ],
)
def test_decode_header_rejects_garbage_with_400(text: str, message: str) -> None:
    with pytest.raises(PaymentRejected, match=message) as caught:
        decode_header(text)
    assert caught.value.status == 400
    assert caught.value.reason is RejectReason.MALFORMED
    assert caught.value.to_detail()["detail"]["msg"] == caught.value.msg


def test_decode_header_limits_tickets_and_signature_size() -> None:
    base = Payment(params(), "0x" + "ab" * 20, Fraction(1), ()).to_json()
    many = dict(
        base,
        tickets=[{"sender_nonce": str(n), "sig": "0x" + "01" * 65} for n in range(MAX_TICKETS + 1)],
    )
    short = dict(base, tickets=[{"sender_nonce": "1", "sig": "0x" + "01" * 64}])
    exponent = dict(base, expected_price="1e99999999")
    huge_time = dict(base, ticket_params=dict(base["ticket_params"], expires_at=10**400))
    cases = ((many, "at most"), (short, "sig"), (exponent, "price"), (huge_time, "invalid"))
    for data, message in cases:
        raw = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
        with pytest.raises(PaymentRejected, match=message):
            decode_header(raw)


uint256 = st.integers(min_value=0, max_value=2**256 - 1)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
params_strategy = st.builds(
    TicketParams,
    recipient=addresses,
    face_value=uint256,
    win_prob=uint256,
    recipient_rand_hash=st.binary(min_size=32, max_size=32),
    seed=uint256,
    expires_at=st.floats(min_value=0, max_value=1e12, allow_nan=False),
    creation_round=uint256,
    creation_round_block_hash=st.binary(min_size=32, max_size=32),
)
payments = st.builds(
    Payment,
    ticket_params=params_strategy,
    sender=addresses,
    expected_price=st.fractions(min_value=0, max_denominator=10**30),
    tickets=st.lists(
        st.tuples(uint256, st.binary(min_size=65, max_size=65)), max_size=MAX_TICKETS
    ).map(tuple),
)


@given(payments)
def test_header_round_trip_property(payment: Payment) -> None:
    assert decode_header(encode_header(payment)) == payment
