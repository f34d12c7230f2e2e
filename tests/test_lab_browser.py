"""The collection as a person uses it: JupyterLab serves every notebook and every widget works.

nbval checks that the notebooks compute what they say; it cannot see what a learner sees. This
test starts JupyterLab from the installed environment on a free localhost port, drives Debian's
headless Chromium through Playwright, and checks, like a person would:

* every notebook opens in the lab with its committed outputs and its kernel starts;
* every notebook with an ipywidgets explorer runs in the lab from a fresh kernel without an error
  cell, its control renders (no "Error displaying widget"), and moving the control changes the
  figure; screenshots land in ``artifacts/browser/``;
* the checker itself fails on a deliberately broken widget (a callback that raises), so a green
  run means something.

The lab serves a temporary copy of ``notebooks/`` so that autosave never touches the committed
notebooks. It listens on 127.0.0.1 only, with a random token, and is stopped at teardown whatever
happens. Chromium comes from Debian (``./run.sh test`` installs it); the test is skipped, with that
reason, only where no Chromium can be found.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = Path(os.environ.get("MEMTUTOR_NOTEBOOK_DIR", ROOT / "notebooks"))
SHOTS = ROOT / "artifacts" / "browser"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_S = 90  # the lab must answer within this
OPEN_S = 60  # a notebook must render within this
KERNEL_S = 60  # and its kernel reach idle within this
CONTROL_S = 30  # after moving a control, the figure must change within this


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _has_explorer(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(
        c.cell_type == "code" and "interact" in c.source and c.source.lstrip().startswith("# NBVAL_IGNORE_OUTPUT")
        for c in nb.cells
    )


def _chromium() -> str | None:
    env = os.environ.get("MEMTUTOR_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        pytest.skip(
            "no Chromium found (looked for MEMTUTOR_CHROMIUM, chromium, chromium-browser): "
            "install Debian's chromium package; ./run.sh test does so when run as root"
        )
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebooks/; stopped at teardown."""
    served = tmp_path_factory.mktemp("lab") / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, served, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    home = served.parent / "jupyter-home"
    home.mkdir()
    # Lab settings for a test run: render every cell (no windowing) and ask about no news.
    settings = home / "settings"
    for plugin, values in {
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        MEMTUTOR_THREADS=env.get("MEMTUTOR_THREADS", "1"),
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={served}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root
    log = open(served.parent / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}; log: {served.parent / 'lab.log'}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s on {base}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "dir": served, "log": served.parent / "lab.log"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(scope="module")
def browser(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


# ----------------------------------------------------------------------------- page helpers


class LabPage:
    """A notebook open in JupyterLab, with bounded waits that fail with a clear message."""

    def __init__(self, browser, lab, name: str):
        self.name = name
        self.lab = lab
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(OPEN_S * 1000)

    def close(self):
        self.context.close()
        _shutdown_kernels(self.lab)

    def shot(self, suffix: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{Path(self.name).stem}_{suffix}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def fail(self, what: str):
        path = self.shot("FAILED")
        pytest.fail(f"{self.name}: {what} (screenshot: {path}; server log: {self.lab['log']})")

    def open(self):
        # A workspace of its own, reset: only this notebook is open (the lab would otherwise restore
        # every notebook opened before it, each with a kernel).
        workspace = "t-" + Path(self.name).stem.replace("_", "-")
        url = f"{self.lab['base']}/lab/workspaces/{workspace}/tree/{self.name}?reset&token={self.lab['token']}"
        self.page.goto(url)
        try:
            self.page.wait_for_selector(
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell", timeout=OPEN_S * 1000
            )
        except Exception:
            self.fail(f"the notebook did not render within {OPEN_S} s")

    def wait_kernel_idle(self, timeout_s: float):
        """Wait for the status bar to say the kernel is Idle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.page.locator(".jp-StatusBar-TextItem", has_text="|").all_inner_texts()
            text = " ".join(status)
            if "Idle" in text:
                return
            time.sleep(0.5)
        self.fail(f"the kernel did not reach Idle within {timeout_s:.0f} s (status bar: {text!r})")

    def cell_count(self) -> int:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").count()

    def run_all(self):
        self.page.locator(".jp-NotebookPanel .jp-Notebook").first.click()
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.locator('li[data-command="runmenu:run-all"]').click()

    def wait_until_run(self, timeout_s: float):
        """Wait until no cell shows the running prompt [*] and the kernel is idle."""
        deadline = time.monotonic() + timeout_s
        time.sleep(1.0)
        while time.monotonic() < deadline:
            prompts = self.page.locator(".jp-InputArea-prompt").all_inner_texts()
            running = [p for p in prompts if "*" in p]
            errors = self.error_cells()
            if errors:
                index, text = errors[0]
                self.fail(f"cell {index} shows an error: ...{text[-400:]}")
            if not running and prompts:
                return
            time.sleep(1.0)
        self.fail(f"the notebook did not finish running within {timeout_s:.0f} s")

    def error_cells(self) -> list[tuple[int, str]]:
        """(index, output text) of the cells (0-based) whose output shows a Python traceback."""
        return self.page.evaluate(
            """() => Array.from(document.querySelectorAll(
                     '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell'))
                 .map((c, i) => [i, c.querySelector('.jp-OutputArea')?.innerText || ''])
                 .filter(([i, t]) => t.includes('Traceback (most recent call last)'))"""
        )

    def widget_errors(self) -> int:
        return self.page.get_by_text("Error displaying widget").count()


def _shutdown_kernels(lab) -> None:
    """Stop every kernel the server runs, so each notebook starts from a fresh, lone kernel."""
    auth = {"Authorization": f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(f"{lab['base']}/api/kernels", headers=auth), timeout=10) as r:
        kernels = json.load(r)
    for k in kernels:
        req = urllib.request.Request(f"{lab['base']}/api/kernels/{k['id']}", headers=auth, method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=20).close()
        except urllib.error.HTTPError:
            pass  # already gone


def _explorer_check(page: LabPage, run_timeout_s: float) -> tuple[Path, Path]:
    """Run the notebook in the lab, find its explorer, move a control and see the figure change."""
    page.open()
    page.wait_kernel_idle(KERNEL_S)
    page.run_all()
    page.wait_until_run(run_timeout_s)
    if page.widget_errors():
        page.fail("a cell shows 'Error displaying widget'")
    # The explorer: the last widget area holding an interactive control and its output (a figure,
    # or text for explorers that print).
    areas = page.page.locator(".jp-OutputArea-output .widget-interact")
    if areas.count() == 0:
        page.fail("no ipywidgets explorer (an interact area) rendered")
    area = areas.last
    area.scroll_into_view_if_needed()
    output = area.locator(".widget-output")

    def signature():
        imgs = output.locator("img")
        srcs = [imgs.nth(i).get_attribute("src") or "" for i in range(imgs.count())]
        text = " ".join(output.all_inner_texts())
        return srcs, text

    deadline = time.monotonic() + CONTROL_S
    while time.monotonic() < deadline:
        srcs, text = signature()
        if any(srcs) or text.strip():
            break
        time.sleep(0.5)
    else:
        page.fail("the explorer shows no output (no figure, no text)")
    before = signature()
    shot_before = page.shot("explorer_before")
    _move_first_control(page, area)
    deadline = time.monotonic() + CONTROL_S
    while time.monotonic() < deadline:
        errs = area.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
        if errs.count() and "Error" in " ".join(errs.all_inner_texts()):
            page.fail("moving the control made the explorer's callback raise: " + errs.first.inner_text()[-300:])
        now = signature()
        if (any(now[0]) or now[1].strip()) and now != before:
            break
        time.sleep(0.5)
    else:
        page.fail(f"moving the explorer's control did not change its output within {CONTROL_S} s")
    if page.widget_errors():
        page.fail("a cell shows 'Error displaying widget' after moving the control")
    return shot_before, page.shot("explorer_after")


def _move_first_control(page: LabPage, area):
    slider = area.locator(".noUi-handle")
    if slider.count():
        handle = slider.first
        handle.focus()
        start = handle.get_attribute("aria-valuenow")
        for key in ("ArrowRight", "ArrowLeft"):  # a slider at its maximum only moves left
            for _ in range(3):
                handle.press(key)
            if handle.get_attribute("aria-valuenow") != start:
                return
        page.fail("the explorer's slider does not move with the arrow keys")
    select = area.locator("select")
    if select.count():
        options = select.first.locator("option").all_inner_texts()
        current = select.first.input_value()
        choice = next(o for o in options if o != current)
        select.first.select_option(label=choice)
        return
    checkbox = area.locator("input[type=checkbox]")
    if checkbox.count():
        checkbox.first.click()
        return
    toggle = area.locator("button.widget-toggle-button")
    if toggle.count() > 1:
        toggle.nth(1).click()
        return
    page.fail("the explorer has no slider, dropdown, checkbox or toggle buttons to move")


# ----------------------------------------------------------------------------- tests


NOTEBOOKS = _notebooks()
EXPLORERS = [p for p in NOTEBOOKS if _has_explorer(p)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_opens_with_outputs_and_kernel(lab, browser, path):
    page = LabPage(browser, lab, path.name)
    try:
        page.open()
        want = len(nbformat.read(path, as_version=4).cells)
        deadline = time.monotonic() + OPEN_S
        while page.cell_count() < want and time.monotonic() < deadline:
            time.sleep(0.5)  # the lab renders long notebooks in chunks
        if page.cell_count() != want:
            page.fail(f"rendered {page.cell_count()} cells, the file has {want}")
        if page.page.locator(".jp-OutputArea-output").count() == 0:
            page.fail("no committed output is shown")
        if page.page.locator(".jp-OutputArea-output img").count() == 0 and _has_figure(path):
            page.fail("the committed figures are not shown")
        page.wait_kernel_idle(KERNEL_S)
        page.shot("opened")
    finally:
        page.close()


def _has_figure(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("path", EXPLORERS, ids=[p.name for p in EXPLORERS])
def test_explorer_runs_and_responds(lab, browser, path):
    page = LabPage(browser, lab, path.name)
    try:
        before, after = _explorer_check(page, run_timeout_s=420)
        assert before.exists() and after.exists()
    finally:
        page.close()


BROKEN = """
import matplotlib.pyplot as plt
from ipywidgets import interact, IntSlider

def show(n=1):
    if n > 1:
        raise RuntimeError("deliberately broken callback")
    plt.plot(range(n + 1))
    plt.show()

show(1)
"""


def test_checker_fails_on_a_deliberately_broken_widget(lab, browser):
    """The explorer check must fail when the widget's callback raises: a green run means something."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(BROKEN),
        nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\ninteract(show, n=IntSlider(min=1, max=5, value=1));"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    name = "zz_broken_widget.ipynb"
    nbformat.write(nb, lab["dir"] / name)
    page = LabPage(browser, lab, name)
    try:
        with pytest.raises(pytest.fail.Exception, match="callback raise|did not change|shows no output"):
            _explorer_check(page, run_timeout_s=120)
    finally:
        page.close()
