"""The speed flags dialog: one row per flag the runner applies, checked with the runner's own
rules as it is edited; flags Orchard does not apply kept as the file has them."""

from __future__ import annotations

from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from core.errors import BadRequest
from core.optimizations import FLAGS, parse
from widgets.flags_dialog import FlagsDialog, describe, summary, with_flags

FILE_FLAGS: dict[str, Any] = {
    "CHANNELS_LAST": True,
    "COMPILE": "unet",
    "MYSTERY": "1",  # unknown to Orchard
    "SFAST": True,  # Livepeer's, known and not applied
}


def dialog(
    qtbot: QtBot, flags: dict[str, Any] | None, notes: list[str] | None = None
) -> FlagsDialog:
    d = FlagsDialog(flags, "org/model (text-to-image)", notes)
    qtbot.addWidget(d)
    return d


def runner_says(flags: dict[str, Any]) -> str:
    with pytest.raises(BadRequest) as exc:
        parse(flags)
    return exc.value.msg


def test_one_row_per_flag_with_what_it_does(qtbot: QtBot) -> None:
    d = dialog(qtbot, FILE_FLAGS, ["This model is cold: ..."])
    assert list(d.boxes) == list(FLAGS)
    assert d.boxes["CHANNELS_LAST"].toolTip() == FLAGS["CHANNELS_LAST"]
    assert d.values["BATCH"].toolTip() == FLAGS["BATCH"]
    assert "CHANNELS_LAST" not in d.values  # on or off, no value
    assert [n for n, b in d.boxes.items() if b.isChecked()] == ["CHANNELS_LAST", "COMPILE"]
    assert d.values["COMPILE"].currentText() == "unet"
    assert d.windowTitle() == "Speed flags · org/model (text-to-image)"
    # what Orchard does not apply is shown, and kept
    assert not d.kept.isHidden()
    assert "MYSTERY=1: unknown optimization flag 'MYSTERY'" in d.kept.text()
    assert "SFAST: not applied: stable-fast is not part of Orchard" in d.kept.text()
    assert d.notes.text() == "This model is cold: ..."
    assert d.error.isHidden() and d.ok_button.isEnabled() and d.ok_button.text() == "Save"
    assert d.flags() == FILE_FLAGS  # nothing touched: the file's flags as they are


def test_a_bad_value_shows_the_runners_message_and_save_is_off(qtbot: QtBot) -> None:
    d = dialog(qtbot, FILE_FLAGS)
    d.values["BATCH"].setCurrentText("100")  # typing a value ticks the flag
    assert d.boxes["BATCH"].isChecked()
    expected = runner_says({"BATCH": "100"})
    assert expected.startswith("optimization flag BATCH must be a whole number from 1 to 64")
    assert d.error.text() == expected and not d.error.isHidden()
    assert not d.ok_button.isEnabled()
    d.values["BATCH"].setCurrentText("8")
    assert d.error.isHidden() and d.ok_button.isEnabled()
    d.values["WARMUP"].setCurrentText("500x500")  # not multiples of 8
    assert d.error.text() == runner_says({"WARMUP": "500x500"})
    assert not d.ok_button.isEnabled()
    d.boxes["WARMUP"].setChecked(False)
    assert d.ok_button.isEnabled()


def test_compile_mode_needs_compile(qtbot: QtBot) -> None:
    d = dialog(qtbot, None)
    assert d.flags() is None and d.ok_button.isEnabled()
    d.boxes["COMPILE_MODE"].setChecked(True)
    assert d.values["COMPILE_MODE"].currentText() == "reduce-overhead"  # filled in
    assert d.error.text() == runner_says({"COMPILE_MODE": "reduce-overhead"})
    assert "needs COMPILE" in d.error.text() and not d.ok_button.isEnabled()
    d.boxes["COMPILE"].setChecked(True)
    assert d.ok_button.isEnabled()
    assert d.flags() == {"COMPILE": True, "COMPILE_MODE": "reduce-overhead"}


def test_edits_keep_the_flags_orchard_does_not_apply(qtbot: QtBot) -> None:
    d = dialog(qtbot, FILE_FLAGS)
    d.boxes["CHANNELS_LAST"].setChecked(False)
    d.values["COMPILE"].setCurrentText("all")
    d.boxes["VAE_FP16"].setChecked(True)
    d.values["WARMUP"].setCurrentText("false")
    d.values["PNG_LEVEL"].setCurrentText("0")
    assert d.flags() == {
        "COMPILE": "all",
        "WARMUP": False,
        "VAE_FP16": True,
        "PNG_LEVEL": "0",
        "MYSTERY": "1",
        "SFAST": True,
    }
    for name in ("COMPILE", "VAE_FP16", "WARMUP", "PNG_LEVEL"):
        d.boxes[name].setChecked(False)
    assert d.flags() == {"MYSTERY": "1", "SFAST": True}  # the others stay


def test_a_flag_off_in_the_file_stays_as_it_is_unless_ticked(qtbot: QtBot) -> None:
    d = dialog(qtbot, {"fuse_qkv": False, "WARMUP": False})
    assert not d.boxes["FUSE_QKV"].isChecked()
    assert d.boxes["WARMUP"].isChecked() and d.values["WARMUP"].currentText() == "false"
    assert d.flags() == {"FUSE_QKV": False, "WARMUP": False}
    d.boxes["FUSE_QKV"].setChecked(True)
    assert d.flags() == {"FUSE_QKV": True, "WARMUP": False}


def test_summary_description_and_merge() -> None:
    assert summary(None) == "plain" and summary({}) == "plain"
    assert summary({"CHANNELS_LAST": True, "COMPILE": "unet"}) == "CHANNELS_LAST, COMPILE=unet"
    assert summary({"CHANNELS_LAST": False, "WARMUP": False}) == "plain"
    assert summary({"SFAST": True, "MYSTERY": "1"}) == "plain · 2 not applied"
    many = {n: True for n in ("CHANNELS_LAST", "FUSE_QKV", "COMPILE", "VAE_FP16", "PINNED_LOAD")}
    assert summary(many) == "CHANNELS_LAST, FUSE_QKV, +3"
    tip = describe(FILE_FLAGS)
    assert f"CHANNELS_LAST: {FLAGS['CHANNELS_LAST']}" in tip
    assert "MYSTERY=1: unknown optimization flag" in tip
    assert describe(None).startswith("No optimisation flags")
    assert with_flags(FILE_FLAGS, {"BATCH": "8"}) == {"BATCH": "8", "MYSTERY": "1", "SFAST": True}
    assert with_flags({"COMPILE": True}, {}) is None
