"""The Models page over the session: catalogue on disk, add a model, warm it, its speed
flags, fit verdicts, import and export of aiModels.json."""

from __future__ import annotations

import json
from pathlib import Path

from app.gui.pages.models import ModelsPage
from app.gui.window import MainWindow
from core import config
from tests.app.conftest import TINY_CONFIG, Env, wait_until
from widgets.models_config_panel import SPEED


def page_of(window: MainWindow) -> ModelsPage:
    page = window.pages["models"]
    assert isinstance(page, ModelsPage)
    return page


def test_catalogue_disk_state_and_estimates(env: Env) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        page = page_of(window)
        cat = page.catalogue
        await wait_until(lambda: len(cat.rows) == 8, 10, "the catalogue scan")
        assert cat.disk_text("orchard-tiny/sdxl").startswith("✓")
        assert cat.disk_text("stabilityai/sdxl-turbo") == "not on disk"
        panel = page.config_panel
        await wait_until(lambda: bool(panel.needs), 10, "the estimates")
        assert panel.cell_text(0, SPEED + 1).endswith("(estimate)")
        assert panel.cell_text(0, SPEED + 2).startswith("fits: ")
        assert "on CPU (" in panel.cell_text(0, SPEED + 2)
        assert panel.plan.text().startswith("The warm models fit:")
        await env.close(window)

    env.run(body())


def test_add_a_catalogue_model_then_warm_it(env: Env) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        page = page_of(window)
        await wait_until(lambda: len(page.catalogue.rows) == 8, 10, "the catalogue scan")
        menu = page.catalogue.row_actions["stabilityai/sdxl-turbo"].add.menu()
        menu.actions()[0].trigger()  # as text-to-image
        panel = page.config_panel
        await wait_until(lambda: panel.table.rowCount() == 3, 10, "the new row")
        saved = config.load(env.config_path)
        assert saved.entries[-1].key == ("text-to-image", "stabilityai/sdxl-turbo")
        assert not saved.entries[-1].warm
        assert "Added stabilityai/sdxl-turbo" in panel.message.text()
        # not on disk yet: estimated from its family's typical size
        await wait_until(lambda: panel.cell_text(2, SPEED + 1) != "—", 10, "its estimate")
        assert panel.cell_text(2, SPEED + 1) == "10.4 GiB (estimate, typical size, not on disk)"
        panel.warm_box(2).setChecked(True)
        await wait_until(lambda: config.load(env.config_path).entries[-1].warm, 10, "saving")
        assert (env.config_path.parent / "aiModels.json.bak").exists()  # saved with a backup
        menu.actions()[0].trigger()  # twice: refused inline
        await wait_until(lambda: "already configured" in panel.message.text(), 5, "refusal")
        await env.close(window)

    env.run(body())


def test_import_and_export(env: Env, tmp_path: Path) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        page = page_of(window)
        out = tmp_path / "exported.json"
        page.config_panel.export_requested.emit(str(out))
        await wait_until(out.exists, 10, "the export")
        assert [e.model_id for e in config.load(out).entries] == [
            "orchard-tiny/sdxl",
            "orchard-tiny/svd",
        ]
        bad = tmp_path / "bad.json"
        bad.write_text('[{"pipeline": "text-to-imgae", "model_id": "a/b"}]')
        page.config_panel.import_requested.emit(str(bad))
        await wait_until(lambda: not page.error.isHidden(), 10, "the import error")
        assert 'did you mean "text-to-image"?' in page.error.text()
        assert window.session.config_path == env.config_path  # the bad file is not adopted
        other = tmp_path / "other.json"
        other.write_text('[{"pipeline": "image-to-video", "model_id": "orchard-tiny/svd"}]')
        page.config_panel.import_requested.emit(str(other))
        await wait_until(lambda: window.session.config_path == other, 10, "the import")
        assert page.error.isHidden() and page.config_panel.table.rowCount() == 1
        await env.close(window)

    env.run(body())


def test_speed_flags_are_saved_to_the_nodes_file(env: Env) -> None:
    entries = [dict(e) for e in TINY_CONFIG]
    entries[0]["optimization_flags"] = {"FUSE_QKV": True, "MYSTERY": "kept"}
    env.write_config(entries)

    async def body() -> None:
        window = await env.window()
        panel = page_of(window).config_panel
        assert panel.cell_text(0, SPEED) == "FUSE_QKV · 1 not applied"
        assert panel.cell_text(1, SPEED) == "plain"
        panel.flags_button(0).click()
        dialog = panel.flags_dialog
        assert dialog is not None
        dialog.boxes["CHANNELS_LAST"].setChecked(True)
        dialog.values["PNG_LEVEL"].setCurrentText("10")
        assert "PNG_LEVEL must be a whole number from 0 to 9" in dialog.error.text()
        assert not dialog.ok_button.isEnabled()
        dialog.values["PNG_LEVEL"].setCurrentText("0")
        dialog.ok_button.click()

        def saved() -> dict[str, object]:
            return dict(json.loads(env.config_path.read_text())[0].get("optimization_flags"))

        await wait_until(lambda: "CHANNELS_LAST" in saved(), 10, "saving")
        assert saved() == {
            "FUSE_QKV": True,
            "CHANNELS_LAST": True,
            "PNG_LEVEL": "0",
            "MYSTERY": "kept",
        }
        assert window.session.config.entries[0].orchard_flags == {
            "FUSE_QKV": True,
            "CHANNELS_LAST": True,
            "PNG_LEVEL": "0",
        }
        assert panel.cell_text(0, SPEED) == "FUSE_QKV, CHANNELS_LAST, +1 · 1 not applied"
        assert "apply when the node starts" in panel.message.text()
        await env.close(window)

    env.run(body())
