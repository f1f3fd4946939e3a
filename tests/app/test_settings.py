"""What the app remembers: window geometry, page, GPU choices, reserves, the config file."""

from __future__ import annotations

from app.gui.settings import AppSettings
from core.gpus import CPU_INDEX
from tests.app.conftest import TINY_CONFIG, Env

GiB = 2**30


def test_choices_survive_a_restart(env: Env) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        window.resize(798, 580)  # within the offscreen screen (800x600)
        window.show_page("pricing")
        gpus = window.pages["gpus"].panel
        gpus.cards[CPU_INDEX].reserve.setValue(2.0)
        assert window.session.reserve[CPU_INDEX] == 2 * GiB
        node = window.pages["node"].panel
        node.free.setChecked(False)
        assert window.session.free is False
        await env.close(window)

        again = await env.window()
        assert again.sidebar.currentRow() == 5
        assert again.stack.currentWidget() is again.pages["pricing"]
        assert (again.width(), again.height()) == (798, 580)
        assert again.session.reserve[CPU_INDEX] == 2 * GiB
        assert again.pages["gpus"].panel.cards[CPU_INDEX].reserve.value() == 2.0
        assert again.session.free is False and not again.pages["node"].panel.free.isChecked()
        assert again.session.config_path == env.config_path
        await env.close(again)

    env.run(body())


def test_settings_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = AppSettings(tmp_path / "s.ini")
    assert s.use_gpus is None and s.reserve == {} and s.free_mode is None and s.page == 0
    s.use_gpus = {1, 0}
    s.reserve = {0: GiB, -1: 3}
    s.free_mode = True
    s.port = 9000
    s.sync()
    t = AppSettings(tmp_path / "s.ini")
    assert t.use_gpus == {0, 1} and t.reserve == {0: GiB, -1: 3}
    assert t.free_mode is True and t.port == 9000 and t.host == "127.0.0.1"
