"""The Setup page in the real window: the doctor's real checks listed when it is shown."""

from __future__ import annotations

from app.gui.pages.setup import SetupPage
from tests.app.conftest import Env, wait_until


def test_setup_page_lists_the_doctor_checks(env: Env) -> None:
    async def body() -> None:
        window = await env.window()
        page = window.pages["setup"]
        assert isinstance(page, SetupPage)
        assert page.doctor.empty.text().startswith("Run the checks")
        window.show_page("setup")  # shown: the checks run
        await wait_until(lambda: bool(page.doctor.checks), 60, "the checks")
        view = page.doctor
        names = [view.row_texts(r)[0] for r in range(view.table.rowCount())]
        assert names[:3] == ["driver", "CUDA", "GPUs"]
        assert "disk" in names and "runtime" in names
        statuses = {view.row_texts(r)[1].split()[-1] for r in range(view.table.rowCount())}
        assert statuses <= {"pass", "warn", "fail"}
        assert view.run_button.isEnabled()
        await wait_until(lambda: page.proposal is not None, 30, "the runtime proposal")
        assert page.proposal is not None
        assert page.runtime.proposed.text().startswith(page.proposal.backend)
        # Run checks again from the button
        view.run_button.click()
        assert not view.run_button.isEnabled()
        await wait_until(lambda: view.run_button.isEnabled(), 60, "the second run")
        await env.close(window)

    env.run(body())
