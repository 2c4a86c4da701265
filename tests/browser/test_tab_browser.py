"""The tab in a real browser: Playwright drives Debian's Chromium against ``python -m extension ui``
at 1400 x 900.

Create an embedding, train a few steps on the tiny model with the run in view, interrupt and resume,
pick the best snapshot, share a PNG card and import it again, reload the page. Every wait is on the
application's own state (the status card's ``data-state`` / ``data-step`` / ``data-job``, a message,
an uploaded file's name), never a fixed pause, so a slow machine only makes it slower. Screenshots
of the key states go to ``$TI_TRAINER_SCREENSHOTS`` (default: the test's temporary folder). Skips
when Playwright, Chromium or gradio is missing.
"""

from __future__ import annotations

import os
import re
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
VIEWPORT = {"width": 1400, "height": 900}
WAIT_MS = 180_000  # an upper bound for one state change on a loaded machine, not a pause
RUN_IN_VIEW = ("#ti_trainer_train", "#ti_trainer_interrupt", "#ti_trainer_resume", "#ti_trainer_status",
               "#ti_trainer_loss_plot", "#ti_trainer_preview_gallery")  # fmt: skip
TOO_MANY = "Too many arguments provided for the endpoint"

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
        deadline = time.monotonic() + 300
        while True:  # the server's own answer, polled
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
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


class Tab:
    """The page, with waits on the tab's state."""

    def __init__(self, page, shots: Path):
        self.page = page
        self.shots = shots
        self.status = page.locator("#ti_trainer_status .ti_trainer_status_card")

    def fill(self, elem_id: str, value: object) -> None:
        box = self.page.locator(
            f"#{elem_id} textarea, #{elem_id} input[type=number], #{elem_id} input[type=text]"
        ).first
        box.fill(str(value))
        box.press("Tab")  # gradio number fields commit on blur

    def open_group(self, elem_id: str) -> None:
        self.page.locator(f"#{elem_id} > button.label-wrap").click()

    def state(self) -> dict[str, str]:
        return {k: self.status.get_attribute(f"data-{k}") or "" for k in ("state", "step", "job", "reason")}

    def wait_for(self, *, state: str, step: int | None = None, other_than: str | None = None,
                 past: int | None = None) -> dict[str, str]:  # fmt: skip
        """Wait until the status card shows ``state`` (and ``step``, a job other than
        ``other_than``, a step above ``past``)."""
        self.page.wait_for_function(
            """([state, step, other, past]) => {
                const c = document.querySelector('#ti_trainer_status .ti_trainer_status_card');
                return c && c.dataset.state === state && (step === null || c.dataset.step === String(step))
                    && (other === null || c.dataset.job !== other) && (past === null || Number(c.dataset.step) > past);
            }""",
            arg=[state, step, other_than, past],
            timeout=WAIT_MS,
        )
        return self.state()

    def shot(self, name: str, *, top: bool = True) -> None:
        if top:
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(self.shots / f"{name}.png"))

    def in_view(self, selector: str) -> bool:
        box = self.page.locator(selector).first.bounding_box()
        return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"] and box["x"] >= 0 \
            and box["x"] + box["width"] <= VIEWPORT["width"]  # fmt: skip

    def image_loaded(self, selector: str) -> None:
        from playwright.sync_api import expect

        image = self.page.locator(selector).first
        expect(image).to_be_visible()
        assert image.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0


def test_the_tab_in_chromium(server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from extension.embedding import load_embedding

    url, tmp, data = server
    shots = Path(os.environ.get("TI_TRAINER_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            warnings: list[tuple[float, str]] = []
            page.on("console", lambda m: warnings.append((time.monotonic(), m.text)) if TOO_MANY in m.text else None)
            page.goto(url)
            tab = Tab(page, shots)
            expect(tab.status).to_have_attribute("data-state", "idle")
            tab.shot("01-start")
            assert not warnings, "the page load itself logs gradio's endpoint warning"

            # -- create an embedding (the create section is open while there are none)
            tab.fill("ti_trainer_create_name", "browsercat")
            tab.fill("ti_trainer_create_init", "cat")
            page.click("#ti_trainer_create_button")
            expect(page.locator("#ti_trainer_create_result")).to_contain_text("Created browsercat")
            expect(page.locator("#ti_trainer_embedding_info")).to_contain_text("browsercat: not trained yet (step 0)")

            # -- the schedule: its error before anything starts, then its plot
            tab.fill("ti_trainer_learn_rate", "0.005:10, 0.001:5")
            expect(page.locator("#ti_trainer_schedule_msg")).to_contain_text("steps must increase")
            tab.fill("ti_trainer_learn_rate", "0.005:2, 0.002")
            expect(page.locator("#ti_trainer_schedule_msg")).to_contain_text("0.002 for steps 2-")
            tab.image_loaded("#ti_trainer_schedule_plot img")

            # -- train 4 steps with previews, snapshots and validation every 2
            tab.fill("ti_trainer_data", data)
            tab.fill("ti_trainer_width", 64)
            tab.fill("ti_trainer_height", 64)
            tab.fill("ti_trainer_max_steps", 4)
            for group, field in (("previews", "preview_every"), ("saving_snapshots", "save_every"),
                                 ("validation", "validation_every")):  # fmt: skip
                tab.open_group(f"ti_trainer_group_{group}")
                tab.fill(f"ti_trainer_{field}", 2)
            tab.fill("ti_trainer_preview_steps", 2)
            page.click("#ti_trainer_train")
            expect(page.locator("#ti_trainer_message")).to_contain_text("Training browsercat started.")
            first = tab.wait_for(state="finished", step=4)
            expect(tab.status).to_contain_text("browsercat: finished")
            expect(tab.status).not_to_contain_text("(completed)")
            expect(page.locator("#ti_trainer_embedding_info")).to_contain_text("browsercat: step 4")
            page.evaluate("window.scrollTo(0, 0)")
            for selector in ("#ti_trainer_loss_plot img", "#ti_trainer_preview_gallery img"):
                tab.image_loaded(selector)
            hidden = [s for s in RUN_IN_VIEW if not tab.in_view(s)]
            assert not hidden, f"not in view at 1400x900 without scrolling: {hidden}"
            tab.shot("02-finished-run-in-view")

            # -- a long run: the run in view while it trains, interrupted, resumed to a near end
            tab.fill("ti_trainer_max_steps", 2000)
            page.evaluate("window.scrollTo(0, 0)")
            page.click("#ti_trainer_train")
            running = tab.wait_for(state="running", other_than=first["job"], past=8)
            quiet_from = time.monotonic()
            tab.image_loaded("#ti_trainer_loss_plot img")
            tab.shot("03-running")
            page.click("#ti_trainer_interrupt")
            expect(page.locator("#ti_trainer_message")).to_contain_text("Interrupt requested")
            stopped = tab.wait_for(state="interrupted", other_than=first["job"])
            quiet_to = time.monotonic()
            step = int(stopped["step"])
            assert step < 2000
            expect(tab.status).to_contain_text(f"browsercat: interrupted at step {step}")
            expect(tab.status).to_contain_text("press Resume to continue")
            expect(tab.status).not_to_contain_text("--resume")
            tab.shot("04-interrupted")
            page.click("#ti_trainer_interrupt")
            expect(page.locator("#ti_trainer_message")).to_contain_text("Nothing to interrupt: no training is running.")
            tab.fill("ti_trainer_max_steps", step + 2)
            page.click("#ti_trainer_resume")
            expect(page.locator("#ti_trainer_message")).to_contain_text("Resuming browsercat.")
            tab.wait_for(state="finished", step=step + 2, other_than=running["job"])
            assert load_embedding(tmp / "emb" / "browsercat.safetensors").step == step + 2
            # a resume with nothing to do says so, and the finished run stays in view
            previews = page.locator("#ti_trainer_preview_gallery img").count()
            page.click("#ti_trainer_resume")
            expect(page.locator("#ti_trainer_message")).to_contain_text("already trained for")
            assert page.locator("#ti_trainer_preview_gallery img").count() == previews > 0
            # the poll itself never warns; only the one event that re-reads the picker at a job's end may
            during = [w for w in warnings if quiet_from < w[0] < quiet_to]
            assert len(during) <= 1, during

            # -- the files of the run: one path a line, never broken inside
            tab.open_group("ti_trainer_files_group")
            files = page.locator("#ti_trainer_files code").first
            expect(files).to_be_visible()
            assert files.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"

            # -- pick the best snapshot: the table marks the lowest validation loss; use the first one
            tab.open_group("ti_trainer_snapshots_group")
            table = page.locator("#ti_trainer_snapshot_table")
            expect(table).to_contain_text("★ lowest validation loss")
            expect(table.locator("tr.ti_trainer_best_row")).to_have_count(1)
            page.locator("#ti_trainer_snapshot_gallery button.thumbnail-item").first.click()
            expect(page.locator("#ti_trainer_snapshot_pick input")).to_have_value(re.compile(r"^step 2\b"))
            page.locator("#ti_trainer_snapshots_group").scroll_into_view_if_needed()
            tab.shot("05-snapshots", top=False)
            page.click("#ti_trainer_snapshot_use")
            expect(page.locator("#ti_trainer_snapshot_msg")).to_contain_text("browsercat is now the snapshot of step 2")
            expect(page.locator("#ti_trainer_embedding_info")).to_contain_text("browsercat: step 2")
            trained = load_embedding(tmp / "emb" / "browsercat.safetensors")
            assert trained.step == 2 and (tmp / "emb" / "browsercat.safetensors.bak").is_file()

            # -- share as PNG: its own picker, the card shown and downloadable
            tab.open_group("ti_trainer_share_group")
            expect(page.locator("#ti_trainer_share_name input")).to_have_value("browsercat")
            page.click("#ti_trainer_share_button")
            tab.image_loaded("#ti_trainer_share_card img")
            link = page.locator("#ti_trainer_share_file a").first
            expect(link).to_be_visible()
            with page.expect_download() as info:
                link.click()
            card = tmp / "downloaded.png"
            info.value.save_as(card)
            assert load_embedding(card).same_vectors(trained)
            page.locator("#ti_trainer_share_group").scroll_into_view_if_needed()
            tab.shot("06-share-card", top=False)

            # -- import the card again under another name (waiting for the upload to show)
            tab.open_group("ti_trainer_import_group")
            page.locator("#ti_trainer_import_file input[type=file]").set_input_files(str(card))
            # gradio shows the name as a stem and an extension, sometimes with white space between them
            expect(page.locator("#ti_trainer_import_file")).to_contain_text(re.compile(r"downloaded\s*\.png"))
            tab.fill("ti_trainer_import_name", "reimported")
            page.click("#ti_trainer_import_button")
            expect(page.locator("#ti_trainer_import_msg")).to_contain_text("Imported reimported")
            assert load_embedding(tmp / "emb" / "reimported.safetensors").same_vectors(trained)
            expect(page.locator("#ti_trainer_embedding input")).to_have_value("reimported")
            expect(page.locator("#ti_trainer_embedding_info")).to_contain_text("reimported")

            # -- the prompt inspector: a long line scrolls instead of being cut off
            tab.open_group("ti_trainer_inspect_group")
            tab.fill("ti_trainer_inspect_prompt", "a photo of (browsercat:1.2), " + "very " * 60 + "detailed")
            page.click("#ti_trainer_inspect_button")
            block = page.locator("#ti_trainer_inspect_out pre")
            expect(block).to_contain_text("browsercat")
            assert block.evaluate("e => getComputedStyle(e).overflowX") == "auto"

            # -- a reloaded page shows one embedding: the job's, in the picker and the status
            page.reload()
            expect(tab.status).to_have_attribute("data-state", "finished")
            expect(page.locator("#ti_trainer_embedding input")).to_have_value("browsercat")
            expect(page.locator("#ti_trainer_embedding_info")).to_contain_text("browsercat: step 2")
            tab.image_loaded("#ti_trainer_loss_plot img")
            tab.shot("07-reloaded")
        finally:
            browser.close()


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
