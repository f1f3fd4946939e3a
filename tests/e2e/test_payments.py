"""Payments through a real paid node: tickets signed with real secp256k1 keys, checked by the
node before a job runs, balances in its SQLite ledger across a restart."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.payments.sender import TicketSender, load_or_create_key
from core.payments.tickets import (
    BALANCE_HEADER,
    PAYMENT_HEADER,
    Payment,
    TicketParams,
    encode_header,
    sign,
)
from tests.conftest import ROOT
from tests.e2e.nodes import record_deposit
from tests.e2e.test_node import SDXL, NodeProcess, start_node, stop_node

PRICE = 3  # wei per pixel
CONFIG = [
    {
        "pipeline": "text-to-image",
        "model_id": SDXL,
        "warm": True,
        "capacity": 2,
        "price_per_unit": PRICE,
    }
]
BODY = {"model_id": SDXL, "prompt": "a coin", "width": 64, "height": 64, "num_inference_steps": 1}
FEE = 64 * 64 * PRICE


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A gateway with a deposit, a stranger without one, and a gateway with its own price."""
    tmp = tmp_path_factory.mktemp("keys")
    names = ("gateway.json", "stranger.json", "special.json")
    for name in names:
        load_or_create_key(tmp / name)
    return tmp / names[0], tmp / names[1], tmp / names[2]


SPECIAL_PRICE = 5


@pytest.fixture(scope="module")
def paid(
    tiny_models: Path, keys: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    tmp = tmp_path_factory.mktemp("paid-node")
    special = load_or_create_key(keys[2]).address
    for key in (keys[0], keys[2]):
        record_deposit(tmp / "data", load_or_create_key(key).address, 10**18)
    override = {**CONFIG[0], "gateway": special, "price_per_unit": SPECIAL_PRICE}
    node = start_node(tiny_models, tmp, [*CONFIG, override], free=False)
    yield tmp, node
    if node.proc.poll() is None:
        stop_node(node)


def params_for(node: NodeProcess, sender: str) -> TicketParams:
    r = httpx.get(f"{node.url}/ticket-params", params={"sender": sender})
    assert r.status_code == 200, r.text
    return TicketParams.from_json(r.json())


def post(node: NodeProcess, header: str | None) -> httpx.Response:
    headers = {PAYMENT_HEADER: header} if header else {}
    return httpx.post(f"{node.url}/text-to-image", json=BODY, headers=headers, timeout=60)


def jobs_done(node: NodeProcess) -> int:
    return sum(1 for j in httpx.get(f"{node.url}/jobs?limit=500").json() if j["state"] == "done")


def test_info_publishes_prices_and_the_recipient(paid: Any) -> None:
    _, node = paid
    info = httpx.get(f"{node.url}/info").json()
    assert info["payment"]["free"] is False and info["payment"]["ledger"] == "off-chain"
    assert info["payment"]["recipient"].startswith("0x")
    (price,) = info["capabilities_prices"]
    assert price["price_per_unit"] == str(PRICE) and price["constraint"] == SDXL


def test_payments_are_checked_before_a_job_runs(paid: Any, keys: tuple[Path, Path, Path]) -> None:
    _, node = paid
    gateway = TicketSender(load_or_create_key(keys[0]))
    stranger = load_or_create_key(keys[1])
    done = jobs_done(node)

    missing = post(node, None)
    assert missing.status_code == 402 and "payment required" in missing.json()["detail"]["msg"]

    # a ticket signed by someone else than the sender it names: forged
    params = params_for(node, gateway.address)
    honest = gateway.payment_for(params, FEE, PRICE)
    nonce, _ = honest.tickets[0]
    from core.payments.tickets import Ticket

    forged_sig = sign(Ticket.from_params(params, gateway.address, nonce), stranger)
    forged = Payment(params, gateway.address, Fraction(PRICE), ((nonce, forged_sig),))
    r = post(node, encode_header(forged))
    assert r.status_code == 401 and r.json()["detail"]["reason"] == "bad_signature"

    # a sender without a deposit in the off-chain ledger
    poor = TicketSender(stranger)
    r = post(node, encode_header(poor.payment_for(params_for(node, poor.address), FEE, PRICE)))
    assert r.status_code == 402 and "deposit" in r.json()["detail"]["msg"]
    assert jobs_done(node) == done  # nothing ran

    ok = post(node, encode_header(honest))
    assert ok.status_code == 200, ok.text
    assert BALANCE_HEADER in ok.headers
    replay = post(node, encode_header(honest))
    assert replay.status_code == 400 and replay.json()["detail"]["reason"] == "replayed_nonce"
    assert jobs_done(node) == done + 1


def test_honest_stream_keeps_balance_within_one_ticket(
    paid: Any, keys: tuple[Path, Path, Path]
) -> None:
    _, node = paid
    gateway = TicketSender(load_or_create_key(keys[0]))
    params = params_for(node, gateway.address)
    ticket_ev = params.expected_value
    before = Fraction(0)
    for i in range(6):
        r = post(node, encode_header(gateway.payment_for(params, FEE, PRICE)))
        assert r.status_code == 200, r.text
        balance = Fraction(r.headers[BALANCE_HEADER])
        gateway.sync_credit(params.recipient, balance)
        if i:
            assert balance >= 0 and balance - before <= ticket_ev  # never paid ahead by more
        before = balance
    earnings = httpx.get(f"{node.url}/earnings").json()
    assert earnings["ledger"] == "off-chain" and earnings["jobs"] >= 7
    assert Fraction(earnings["per_model"][SDXL]) >= 7 * FEE


def test_a_gateway_with_its_own_price(paid: Any, keys: tuple[Path, Path, Path]) -> None:
    """aiModels.json's per-gateway entry: /info?sender= shows that gateway its price, and the
    node charges it; paying the default price is refused."""
    _, node = paid
    special = TicketSender(load_or_create_key(keys[2]))
    default = httpx.get(f"{node.url}/info").json()["capabilities_prices"][0]
    mine = httpx.get(f"{node.url}/info", params={"sender": special.address}).json()
    assert default["price_per_unit"] == str(PRICE)
    assert mine["capabilities_prices"][0]["price_per_unit"] == str(SPECIAL_PRICE)
    params = params_for(node, special.address)
    refused = special.payment_for(params, FEE, PRICE)
    cheap = post(node, encode_header(refused))
    assert cheap.status_code == 402 and cheap.json()["detail"]["reason"] == "price_too_low"
    special.payment_rejected(refused, FEE)  # as the gateway's payer does
    fee = 64 * 64 * SPECIAL_PRICE
    ok = post(node, encode_header(special.payment_for(params, fee, SPECIAL_PRICE)))
    assert ok.status_code == 200, ok.text


def test_restart_keeps_credit_and_refuses_replays(
    paid: Any, keys: tuple[Path, Path, Path], tiny_models: Path
) -> None:
    tmp, node = paid
    gateway = TicketSender(load_or_create_key(keys[0]))
    params = params_for(node, gateway.address)
    payment = gateway.payment_for(params, FEE, PRICE)
    first = post(node, encode_header(payment))
    assert first.status_code == 200
    balance = first.headers[BALANCE_HEADER]
    stop_node(node)
    out = subprocess.run(
        [sys.executable, "-m", "app", "payments", "earnings", "--data-dir", str(tmp / "data")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0 and "off-chain" in out.stdout.lower(), out.stdout + out.stderr
    again = start_node(tiny_models, tmp, CONFIG, free=False)
    try:
        replay = post(again, encode_header(payment))
        assert replay.status_code == 400 and replay.json()["detail"]["reason"] == "replayed_nonce"
        # the credit survived: a ticket-less draw on it is not possible, but a new payment
        # under the same params sees the balance it left
        nxt = post(again, encode_header(gateway.payment_for(params, FEE, PRICE)))
        assert nxt.status_code == 200
        assert Fraction(nxt.headers[BALANCE_HEADER]) >= Fraction(balance) - FEE
    finally:
        stop_node(again)
