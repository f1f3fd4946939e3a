from __future__ import annotations

from pytestqt.qtbot import QtBot

from widgets.model_catalogue import CatalogueRow, ModelCatalogue

GiB = 2**30
ROWS = [
    CatalogueRow(
        "stabilityai/sdxl-turbo",
        "SDXL-Turbo",
        ("text-to-image", "image-to-image"),
        "sdxl_turbo",
        int(6.5 * GiB),
    ),
    CatalogueRow(
        "orchard-tiny/sdxl",
        "Tiny SDXL (demo, noise)",
        ("text-to-image",),
        "sdxl",
        0,
        on_disk=2 * 2**20,
        demo=True,
    ),
]


def test_rows_show_what_is_on_disk(qtbot: QtBot) -> None:
    cat = ModelCatalogue()
    qtbot.addWidget(cat)
    cat.set_models_dir("/models")
    cat.set_rows(ROWS)
    assert "/models" in cat.where.text()
    assert cat.table.rowCount() == 2
    assert cat.table.item(0, 0).text() == "SDXL-Turbo\nstabilityai/sdxl-turbo"
    assert cat.table.item(0, 3).text() == "≈ 6.5 GiB"
    assert cat.disk_text("stabilityai/sdxl-turbo") == "not on disk"
    assert cat.disk_text("orchard-tiny/sdxl") == "✓ 2 MiB"
    assert cat.row_actions["orchard-tiny/sdxl"].download.text() == "Make"
    assert cat.row_actions["orchard-tiny/sdxl"].download.isHidden()  # already there


def test_download_progress_failure_and_finish(qtbot: QtBot) -> None:
    cat = ModelCatalogue()
    qtbot.addWidget(cat)
    cat.set_rows(ROWS)
    actions = cat.row_actions["stabilityai/sdxl-turbo"]
    with qtbot.waitSignal(cat.download_requested) as asked:
        actions.download.click()
    assert asked.args == ["stabilityai/sdxl-turbo"]
    cat.set_progress("stabilityai/sdxl-turbo", GiB, 4 * GiB, 50 * 2**20)
    assert actions.progress.isVisibleTo(cat) and actions.download.isHidden()
    assert actions.progress.value() == 250
    assert actions.progress.format() == "1.0 GiB of 4.0 GiB · 50 MiB/s"
    with qtbot.waitSignal(cat.cancel_requested) as cancel:
        actions.cancel.click()
    assert cancel.args == ["stabilityai/sdxl-turbo"]
    cat.set_failed("stabilityai/sdxl-turbo", "cannot reach the Hugging Face Hub")
    assert not actions.download.isHidden() and actions.progress.isHidden()
    assert cat.message.text() == "SDXL-Turbo: cannot reach the Hugging Face Hub"
    cat.set_finished("stabilityai/sdxl-turbo", 7 * GiB)
    assert cat.disk_text("stabilityai/sdxl-turbo") == "✓ 7.0 GiB"
    assert cat.message.isHidden() and actions.download.isHidden()


def test_add_to_node_per_pipeline(qtbot: QtBot) -> None:
    cat = ModelCatalogue()
    qtbot.addWidget(cat)
    cat.set_rows(ROWS)
    menu = cat.row_actions["stabilityai/sdxl-turbo"].add.menu()
    assert [a.text() for a in menu.actions()] == ["as text-to-image", "as image-to-image"]
    with qtbot.waitSignal(cat.add_requested) as got:
        menu.actions()[1].trigger()
    assert got.args == ["stabilityai/sdxl-turbo", "image-to-image"]
