"""Wrong input is refused inline, next to its field, before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from pytestqt.qtbot import QtBot

from widgets.generate_form import GenerateForm, GenerationRequest

MODELS = {
    "text-to-image": ["stabilityai/sdxl-turbo"],
    "image-to-image": ["stabilityai/sdxl-turbo"],
    "image-to-video": ["stabilityai/svd"],
}


@pytest.fixture
def form(qtbot: QtBot) -> GenerateForm:
    f = GenerateForm()
    qtbot.addWidget(f)
    f.set_models(MODELS)
    return f


def submit_refused(qtbot: QtBot, form: GenerateForm) -> str:
    with qtbot.assertNotEmitted(form.submitted):
        form.submit.click()
    assert not form.error.isHidden()
    return form.error.text()


def test_a_good_request_is_sent(qtbot: QtBot, form: GenerateForm) -> None:
    form.prompt.setText("a fox")
    form.width_edit.setText("768")
    form.height_edit.setText("512")
    form.steps.setText("4")
    form.seed.setText("7")
    with qtbot.waitSignal(form.submitted) as got:
        form.submit.click()
    req = got.args[0]
    assert isinstance(req, GenerationRequest)
    assert req == GenerationRequest(
        "text-to-image",
        "stabilityai/sdxl-turbo",
        {
            "model_id": "stabilityai/sdxl-turbo",
            "prompt": "a fox",
            "num_inference_steps": 4,
            "seed": 7,
            "width": 768,
            "height": 512,
        },
        None,
    )
    assert form.error.isHidden() and form.invalid_fields() == []


def test_non_numbers_and_bad_sizes_are_refused_inline(qtbot: QtBot, form: GenerateForm) -> None:
    form.prompt.setText("a fox")
    form.width_edit.setText("500")
    form.height_edit.setText("wide")
    form.steps.setText("four")
    text = submit_refused(qtbot, form)
    assert "Width must be a positive multiple of 8 (got 500); try 496" in text
    assert "Height must be a whole number (got 'wide')" in text
    assert "Steps must be a whole number (got 'four')" in text
    assert set(form.invalid_fields()) == {form.width_edit, form.height_edit, form.steps}
    form.width_edit.setText("512")
    form.height_edit.setText("4096")
    form.steps.setText("0")
    text = submit_refused(qtbot, form)
    assert "Height 4096 is above the limit of 2048" in text
    assert "Steps must be between 1 and 500 (got 0)" in text
    assert form.width_edit not in form.invalid_fields()


def test_missing_prompt_and_missing_image(qtbot: QtBot, form: GenerateForm, tmp_path: Path) -> None:
    assert "Prompt: write what the image should show" in submit_refused(qtbot, form)
    form.pipeline.setCurrentText("image-to-video")
    assert form.model.currentText() == "stabilityai/svd"
    assert form.prompt.isHidden() and not form.image.isHidden()
    text = submit_refused(qtbot, form)
    assert "Input image: image-to-video starts from an image; choose one" in text
    assert form.invalid_fields() == [form.image]
    form.image.setText(str(tmp_path / "nope.png"))
    assert "does not exist" in submit_refused(qtbot, form)
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    form.image.setText(str(junk))
    assert "is not an image Orchard can read" in submit_refused(qtbot, form)


def test_image_to_image_keeps_the_input_size(
    qtbot: QtBot, form: GenerateForm, tmp_path: Path
) -> None:
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(small)
    form.pipeline.setCurrentText("image-to-image")
    assert form.size_row.isHidden()
    form.prompt.setText("make it blue")
    form.image.setText(str(small))
    text = submit_refused(qtbot, form)
    assert text == "Input image: its width 40 is below this runner's minimum of 64"
    assert form.invalid_fields() == [form.image]
    good = tmp_path / "good.png"
    Image.new("RGB", (200, 130)).save(good)
    form.image.setText(str(good))
    with qtbot.waitSignal(form.submitted) as got:
        form.submit.click()
    req = got.args[0]
    assert req.image_path == str(good) and "width" not in req.params


def test_no_model_for_a_pipeline(qtbot: QtBot) -> None:
    form = GenerateForm()
    qtbot.addWidget(form)
    form.set_models({"text-to-image": ["m/a"]})
    form.pipeline.setCurrentText("image-to-video")
    assert not form.submit.isEnabled()
    assert "No model offers image-to-video" in form.hint.text()
    form.set_busy(True)
    assert form.submit.text() == "Generating…"


def test_the_nodes_refusal_is_shown(form: GenerateForm) -> None:
    form.show_error("The node refused the job: insufficient capacity")
    assert form.error.text() == "The node refused the job: insufficient capacity"
    form.clear_error()
    assert form.error.isHidden()
