"""The tab in a real browser: Playwright drives Debian's Chromium against ``python -m extension ui``.

Create an embedding, train a few steps on the tiny model, see the loss plot and a preview appear,
interrupt and resume, download a PNG card and import it again. Skips when Playwright, Chromium or
gradio is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TI_TRAINER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

pytestmark = pytest.mark.slow


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        from extension.ui.compat import import_gradio

        import_gradio()
    except ImportError as exc:
        return f"gradio is not installed ({exc})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from extension.training.demo_data import make_demo_dataset

    tmp = tmp_path_factory.mktemp("browser")
    data = make_demo_dataset(tmp / "data", n=4, size=64)
    port = _free_port()
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "extension", "ui", "--model", "tiny-sd1", "--port", str(port),
         "--embeddings-dir", str(tmp / "emb"), "--log-dir", str(tmp / "logs"), "--device", "cpu"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"the server did not start:\n{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, tmp, data
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_create_train_interrupt_resume_share_import(server) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, tmp, data = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.set_default_timeout(45_000)
            expect.set_options(timeout=45_000)
            page.goto(url)

            def fill(elem_id: str, value: object) -> None:
                box = page.locator(f"#{elem_id} textarea, #{elem_id} input[type=number]").first
                box.fill(str(value))
                box.press("Tab")  # gradio number fields commit on blur

            def open_group(elem_id: str) -> None:
                page.locator(f"#{elem_id} > button.label-wrap").click()

            status = page.locator("#ti_trainer_status textarea")

            def wait_status(*parts: str, timeout: float = 90) -> str:
                deadline = time.monotonic() + timeout
                while True:
                    value = status.input_value()
                    if all(p in value for p in parts):
                        return value
                    if time.monotonic() > deadline:
                        raise AssertionError(f"status never showed {parts}; it shows:\n{value}")
                    page.wait_for_timeout(200)

            # -- create an embedding (the create section is open while there are none)
            fill("ti_trainer_create_name", "browsercat")
            fill("ti_trainer_create_init", "cat")
            page.click("#ti_trainer_create_button")
            expect(page.locator("#ti_trainer_create_result")).to_contain_text("Created browsercat")
            expect(page.locator("#ti_trainer_embedding_info")).to_contain_text("step 0")

            # -- an invalid schedule shows its error before anything starts
            fill("ti_trainer_learn_rate", "0.005:10, 0.001:5")
            expect(page.locator("#ti_trainer_schedule_msg")).to_contain_text("steps must increase")
            fill("ti_trainer_learn_rate", "0.005:2, 0.002")
            expect(page.locator("#ti_trainer_schedule_msg")).to_contain_text("0.002 for steps 2-")

            # -- train a few steps with previews
            fill("ti_trainer_data", data)
            fill("ti_trainer_width", 64)
            fill("ti_trainer_height", 64)
            fill("ti_trainer_max_steps", 4)
            open_group("ti_trainer_group_previews")
            fill("ti_trainer_preview_every", 2)
            fill("ti_trainer_preview_steps", 2)
            page.click("#ti_trainer_train")
            expect(page.locator("#ti_trainer_message")).to_contain_text("started")
            wait_status("finished", "step 4 / 4")
            for selector in ("#ti_trainer_loss_plot img", "#ti_trainer_preview_gallery img"):
                image = page.locator(selector).first
                image.scroll_into_view_if_needed()  # the images load lazily
                expect(image).to_be_visible()
                assert image.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
            expect(page.locator("#ti_trainer_files textarea")).to_have_value(
                _regex(r"browsercat\.safetensors")
            )

            # -- train on to 40 steps, interrupt at once, then resume to the end
            fill("ti_trainer_max_steps", 40)
            first_job = page.locator("#ti_trainer_message").inner_text()
            page.click("#ti_trainer_train")
            expect(page.locator("#ti_trainer_message")).not_to_have_text(first_job)
            expect(page.locator("#ti_trainer_message")).to_contain_text("started (job")
            page.click("#ti_trainer_interrupt")
            expect(page.locator("#ti_trainer_message")).to_contain_text("Interrupting")
            stopped = wait_status("interrupted")
            assert "step 40 / 40" not in stopped
            page.click("#ti_trainer_resume")
            expect(page.locator("#ti_trainer_message")).to_contain_text("Resuming")
            wait_status("finished", "step 40 / 40")
            from extension.embedding import load_embedding

            trained = load_embedding(tmp / "emb" / "browsercat.safetensors")
            assert trained.step == 40

            # -- share as PNG (with the last preview) and download the card
            open_group("ti_trainer_share_group")
            page.click("#ti_trainer_share_button")
            link = page.locator("#ti_trainer_share_file a").first
            expect(link).to_be_visible()
            with page.expect_download() as info:
                link.click()
            card = tmp / "downloaded.png"
            info.value.save_as(card)
            assert load_embedding(card).same_vectors(trained)

            # -- import the card again under another name
            open_group("ti_trainer_import_group")
            page.locator("#ti_trainer_import_file input[type=file]").set_input_files(str(card))
            fill("ti_trainer_import_name", "reimported")
            page.wait_for_timeout(500)  # let the upload finish
            page.click("#ti_trainer_import_button")
            expect(page.locator("#ti_trainer_import_msg")).to_contain_text("Imported reimported")
            assert load_embedding(tmp / "emb" / "reimported.safetensors").same_vectors(trained)
            expect(page.locator("#ti_trainer_embedding_info")).to_contain_text("reimported")
        finally:
            browser.close()


def _regex(pattern: str):
    import re

    return re.compile(pattern)


def test_send_to_txt2img_script() -> None:
    """``javascript/ti_trainer.js`` in Chromium against a page shaped like the web UI's txt2img."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    script = (ROOT / "javascript" / "ti_trainer.js").read_text(encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_content(
                "<div id='txt2img_prompt'><textarea></textarea></div>"
                "<script>window.gradioApp = () => document; window.switched = 0;"
                " window.switch_to_txt2img = () => { window.switched += 1; };"
                " window.inputs = 0;</script>"
            )
            page.add_script_tag(content=script)
            page.evaluate(
                "document.querySelector('#txt2img_prompt textarea')"
                ".addEventListener('input', () => { window.inputs += 1; })"
            )
            page.evaluate("ti_trainer_send_embedding('cat', 1.5)")
            page.evaluate("ti_trainer_send_embedding('dog-v2', 1)")
            page.evaluate("ti_trainer_send_embedding('', 1)")  # nothing picked: nothing sent
            assert page.input_value("#txt2img_prompt textarea") == "(cat:1.5), (dog-v2:1)"
            assert page.evaluate("[window.switched, window.inputs]") == [2, 2]
        finally:
            browser.close()
