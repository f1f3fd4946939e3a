from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pytestqt.qtbot import QtBot

from widgets.log_view import LogView, clean_line, level_of_line, source_of


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    lg = logging.getLogger("orchard-test-logs")
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    yield lg
    lg.handlers.clear()


@pytest.fixture
def view(qtbot: QtBot, logger: logging.Logger) -> Iterator[LogView]:
    v = LogView(logger, max_entries=50)
    qtbot.addWidget(v)
    yield v
    v.close_handler()


def test_records_and_runner_lines_appear(view: LogView, logger: logging.Logger) -> None:
    logger.info("node listening")
    logger.debug("too chatty")
    view.add_lines("runner-gpu0", ["2026-11-28 10:00:00,1 WARNING core.runner: slow", "ok"])
    view.flush()
    lines = view.visible_lines()
    assert any("INFO" in line and "node listening" in line for line in lines)
    assert not any("too chatty" in line for line in lines)  # below the Info level
    assert any("WARNING" in line and "runner-gpu0: 2026" in line for line in lines)
    assert "runner-gpu0" in view.sources


def test_filters_by_level_source_and_text(view: LogView, logger: logging.Logger) -> None:
    logger.info("alpha")
    logger.error("beta failed")
    view.add_lines("runner-cpu0", ["gamma"])
    view.flush()
    view.level.setCurrentText("Error")
    assert [line.split(": ", 1)[1] for line in view.visible_lines()] == ["beta failed"]
    view.level.setCurrentText("Debug")
    view.source.setCurrentText("runner-cpu0")
    assert len(view.visible_lines()) == 1 and view.visible_lines()[0].endswith("gamma")
    view.source.setCurrentText("All sources")
    view.search.setText("ALPHA")
    assert len(view.visible_lines()) == 1 and view.visible_lines()[0].endswith("alpha")


def test_bounded_and_detached(view: LogView, logger: logging.Logger) -> None:
    for i in range(120):
        logger.info("line %d", i)
    view.flush()
    assert len(view.entries) == 50 and view.entries[-1].text == "line 119"
    assert view.text.document().blockCount() <= 50
    view.close_handler()
    assert view.handler not in logger.handlers


def test_helpers() -> None:
    assert source_of("core.orchestrator.node") == "node"
    assert source_of("core.runners.local") == "runners"
    assert source_of("app.gui.session") == "app"
    assert source_of("uvicorn.error") == "uvicorn"
    assert level_of_line("Traceback (most recent call last):") == logging.ERROR
    assert level_of_line("2026 ERROR core.runner.server: boom") == logging.ERROR
    assert level_of_line("Loading weights") == logging.INFO
    assert (
        clean_line("Loading:   0%|  | 0/7\rLoading: 100%|##| 7/7\x1b[A") == "Loading: 100%|##| 7/7"
    )
    assert clean_line("\r\r") == ""
