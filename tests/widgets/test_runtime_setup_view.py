from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from core.runtime import STEP_TEXT, NotEnoughDisk, Offline, Proposal, SetupProgress, Step
from widgets.runtime_setup_view import RuntimeSetupView, progress_text

MiB = 2**20


def torch_download(done: int, eta: float | None = 65.0) -> SetupProgress:
    return SetupProgress(
        Step.TORCH,
        4,
        7,
        STEP_TEXT[Step.TORCH],
        file="torch-2.8.0-cp312.whl",
        bytes_done=done * MiB,
        bytes_total=800 * MiB,
        eta_s=eta,
    )


def test_proposal_and_current_runtime(qtbot: QtBot) -> None:
    view = RuntimeSetupView()
    qtbot.addWidget(view)
    assert view.current.text() == "none"
    view.set_proposal(Proposal("cu128", "driver 570 supports CUDA 12.8", "570.86", "12.8"))
    assert view.proposed.text().startswith("cu128")
    assert "CUDA 12.8" in view.proposed.text()
    view.set_current("/data/runtime/cu128/bin/python")
    assert view.current.text() == "/data/runtime/cu128/bin/python"


def test_progress_shows_step_bytes_and_time_left(qtbot: QtBot) -> None:
    view = RuntimeSetupView()
    qtbot.addWidget(view)
    view.set_running()
    assert not view.bar.isHidden() and not view.cancel_button.isHidden()
    assert not view.setup_button.isEnabled()
    view.update(SetupProgress(Step.CHECK, 1, 7, STEP_TEXT[Step.CHECK]))
    assert view.step.text() == "Step 1 of 7: checking Python and disk space"
    assert view.bar.value() == 0
    view.update(SetupProgress(Step.VENV, 2, 7, STEP_TEXT[Step.VENV], skipped=True))
    assert "(already done)" in view.step.text()
    view.update(torch_download(400))
    text = view.step.text()
    assert text.startswith("Step 4 of 7: installing PyTorch")
    assert "torch-2.8.0-cp312.whl" in text and "400 MiB of 800 MiB" in text
    assert "1 min 05 s left" in text
    assert view.bar.value() == round((3 + 0.5) / 7 * 1000)
    view.update(SetupProgress(Step.VERIFY, 7, 7, "the CPU runtime is ready", finished=True))
    assert view.bar.value() == 1000
    assert view.step.text() == "The CPU runtime is ready"
    assert view.cancel_button.isHidden() and view.setup_button.isEnabled()


@pytest.mark.parametrize(
    "error",
    [
        Offline("cannot reach the package index (https://pypi.org/simple): check the network"),
        NotEnoughDisk("not enough disk space for the CPU runtime", 11 * 2**30, 500 * MiB),
    ],
)
def test_errors_are_shown_inline_with_retry(qtbot: QtBot, error: Exception) -> None:
    view = RuntimeSetupView()
    qtbot.addWidget(view)
    view.set_running()
    view.update(torch_download(100))
    view.show_error(str(error))
    assert not view.error_box.isHidden()
    assert view.error_text.text() == str(error)
    assert not view.retry_button.isHidden() and view.cancel_button.isHidden()
    with qtbot.waitSignal(view.retry_requested, timeout=1000):
        view.retry_button.click()
    view.set_running()  # the retry clears the error
    assert view.error_box.isHidden()


def test_cancel_and_existing_python_signals(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    view = RuntimeSetupView()
    qtbot.addWidget(view)
    view.set_running()
    with qtbot.waitSignal(view.cancel_requested, timeout=1000):
        view.cancel_button.click()
    view.set_stopped()
    assert "Retry" in view.step.text() and not view.retry_button.isHidden()
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("/opt/py/bin/python", ""))
    )
    with qtbot.waitSignal(view.use_existing_requested, timeout=1000) as sig:
        view.existing_button.click()
    assert sig.args == ["/opt/py/bin/python"]


def test_progress_text_without_bytes() -> None:
    p = SetupProgress(Step.PIP, 3, 7, STEP_TEXT[Step.PIP])
    assert progress_text(p) == "Step 3 of 7: updating pip"
