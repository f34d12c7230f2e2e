"""The collection as a book: the static site builds, and works offline in a real browser.

The test builds the site exactly as ``./run.sh book`` does (Sphinx + myst-nb from the committed
notebooks, no re-execution) into a temporary folder, serves it on 127.0.0.1 and reads it like a
learner would, in the headless Chromium the lab test uses (``tests/test_lab_browser.py``):

* the build emits no warning and takes under two minutes;
* every page loads with no console error, no failed request and no request leaving localhost
  (the site must render offline: MathJax, fonts and scripts are served by the site itself);
* math is rendered: no raw ``$...$``, ``\\(`` or ``$$`` text is left outside code, and MathJax
  reports no TeX error;
* every figure of every lesson is shown (as many loaded ``<img>`` as the notebook has PNG outputs,
  an explorer's saved figure included), each explorer has its live-kernel note, each lesson a
  download link to the committed notebook and previous/next links, and the lesson <-> API links
  resolve both ways;
* every internal link of every page resolves, anchors included (a crawl of the whole site);
* the built-in search finds a function by name and a lesson by a word of its title;
* opened from the file system (no server), a lesson still renders its math.

Screenshots of the home page, a lesson and an API page land in ``artifacts/book/``, with
``summary.json`` (build time, page count, links checked). The checkers themselves are tested on
small broken inputs, so a green run means something.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_lab_browser import CHROMIUM_FLAGS, _chromium

pytestmark = [pytest.mark.slow, pytest.mark.book]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SHOTS = ROOT / "artifacts" / "book"
BUILD_BUDGET_S = 120  # the bound on 2 cores
PAGE_S = 30  # a page must load within this
SEARCH_S = 30  # and a search answer within this

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# Visible text of a page outside code, as the reader sees it (MathJax's output excluded).
VISIBLE_TEXT_JS = """() => {
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "TEXTAREA", "NOSCRIPT", "MJX-CONTAINER"]);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let e = node.parentElement; e; e = e.parentElement) {
        if (skip.has(e.tagName) || e.classList.contains("highlight")) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  const parts = [];
  while (walker.nextNode()) parts.push(walker.currentNode.nodeValue);
  return parts.join("");
}"""

MATHJAX_DONE_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;  // MathJax's fonts come from the site too
  return {
    typeset: document.querySelectorAll("mjx-container").length,
    errors: Array.from(document.querySelectorAll("mjx-merror")).map(e => e.textContent).slice(0, 3),
  };
}"""

IMAGES_JS = """() => Array.from(document.querySelectorAll("article .cell_output img")).map(
  i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}))"""


# ----------------------------------------------------------------------------- checkers


RAW_MATH = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\begin\{|\$[^\s$][^$\n]*\$")


def raw_math(text: str) -> list[str]:
    """Stretches of a page's visible text that look like TeX MathJax did not render."""
    return [m.group(0)[:60] for m in RAW_MATH.finditer(text)]


class _PageParser(HTMLParser):
    """Collects a page's element ids and the URLs it refers to (links, images, scripts, styles)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        key = {"a": "href", "link": "href", "img": "src", "script": "src"}.get(tag)
        if key and a.get(key):
            self.refs.append((tag, a[key]))


def crawl(base: str, fetch) -> tuple[dict[str, _PageParser], list[str], int]:
    """Visit every HTML page reachable from ``base`` + ``index.html`` through internal links.

    ``fetch(url) -> (status, content_type, text)``. Returns the parsed pages, the broken internal
    references (``page -> target: why``) and the number of internal references checked.
    """
    pages: dict[str, _PageParser] = {}
    answers: dict[str, tuple[int, str, str]] = {}
    refs: list[tuple[str, str]] = []  # (page, absolute url with fragment)

    def get(url: str) -> tuple[int, str, str]:
        if url not in answers:
            answers[url] = fetch(url)
        return answers[url]

    todo = [base + "index.html"]
    while todo:
        url = todo.pop()
        if url in pages:
            continue
        status, ctype, text = get(url)
        if status != 200 or "html" not in ctype:
            continue
        parser = _PageParser()
        parser.feed(text)
        pages[url] = parser
        for _, ref in parser.refs:
            target = urllib.parse.urljoin(url, ref)
            if not target.startswith(base):
                continue  # an outside link: never fetched at view time
            refs.append((url, target))
            path = urllib.parse.urldefrag(target).url.split("?")[0]
            if path.endswith(".html") and path not in pages:
                todo.append(path)
    broken = []
    for page, target in refs:
        path, fragment = urllib.parse.urldefrag(target)
        path = path.split("?")[0]
        status, _, _ = get(path)
        if status != 200:
            broken.append(f"{page} -> {target}: HTTP {status}")
        elif fragment and path in pages and urllib.parse.unquote(fragment) not in pages[path].ids:
            broken.append(f"{page} -> {target}: no element with id {fragment!r}")
    return pages, broken, len(refs)


def expected_figures(path: Path) -> int:
    """PNG figures a lesson shows: its outputs', plus the saved output of each widget it displays."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    count = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            count += "image/png" in data
            view = data.get(WIDGET_VIEW)
            if view:
                for child in state.get(view["model_id"], {}).get("state", {}).get("children", []):
                    model = state.get(child.removeprefix("IPY_MODEL_"), {})
                    if model.get("model_name") == "OutputModel":
                        count += sum("image/png" in o.get("data", {}) for o in model["state"].get("outputs", []))
    return count


def explorer_count(path: Path) -> int:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return sum(
        1
        for c in nb["cells"]
        if c["cell_type"] == "code"
        and "interact" in "".join(c["source"])
        and "".join(c["source"]).lstrip().startswith("# NBVAL_IGNORE_OUTPUT")
    )


# ----------------------------------------------------------------------------- the checkers fail on broken input


def test_raw_math_checker_flags_unrendered_tex():
    assert raw_math("the weight $w_i$ of slot") == ["$w_i$"]
    assert raw_math("display \\(x\\) and $$y$$") != []
    assert raw_math("costs 5 dollars, no math here; a | b") == []


def test_link_checker_flags_a_broken_link_and_a_missing_anchor():
    site = {
        "http://h/index.html": '<a href="a.html#top">a</a> <a href="gone.html">x</a> <img src="f.png">',
        "http://h/a.html": '<h1 id="intro">A</h1><a href="index.html">home</a> <a href="http://elsewhere/">out</a>',
        "http://h/f.png": "",
    }

    def fetch(url):
        if url in site:
            return 200, "image/png" if url.endswith(".png") else "text/html", site[url]
        return 404, "", ""

    pages, broken, checked = crawl("http://h/", fetch)
    assert set(pages) == {"http://h/index.html", "http://h/a.html"}
    assert checked == 4  # the outside link is not counted
    assert any("gone.html: HTTP 404" in b for b in broken)
    assert any("no element with id 'top'" in b for b in broken)
    assert len(broken) == 2


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """The book built from a fresh start, as ``./run.sh book`` builds it."""
    pytest.importorskip("myst_nb", reason="the book needs the docs extra: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("book")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-q", "docs", str(out / "html"), "-d", str(out / "doctrees")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    build_s = time.monotonic() - start
    assert proc.returncode == 0, f"the book did not build:\n{proc.stderr[-3000:]}"
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    return {"dir": out / "html", "build_s": build_s, "warnings": warnings}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - the test reports what matters
        pass


@pytest.fixture(scope="module")
def server(site):
    """The built site on a free 127.0.0.1 port; stopped at teardown."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site["dir"])))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            ctype = r.headers.get("Content-Type", "")
            body = r.read()
            return r.status, ctype, body.decode("utf-8", "replace") if "html" in ctype else ""
    except urllib.error.HTTPError as e:
        return e.code, "", ""


@pytest.fixture(scope="module")
def crawled(server):
    pages, broken, checked = crawl(server, _fetch)
    return {"pages": pages, "broken": broken, "checked": checked}


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    if path is None:
        pytest.skip(
            "no Chromium found (looked for MEMTUTOR_CHROMIUM, chromium, chromium-browser): "
            "install Debian's chromium package; ./run.sh test does so when run as root"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class BookPage:
    """A page of the book in its own browser context, recording every problem a reader would meet."""

    def __init__(self, browser, server: str):
        self.server = server
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(PAGE_S * 1000)
        self.problems: list[str] = []
        # Offline: any request that leaves the local server is refused, and counted as a failure.
        self.context.route(
            re.compile(r"^(?!" + re.escape(server) + ").*"),
            lambda route: (self.problems.append(f"request outside the site: {route.request.url}"), route.abort()),
        )
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on(
            "requestfailed",
            lambda r: r.url.startswith(server) and self.problems.append(f"failed request: {r.url} ({r.failure})"),
        )
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def open(self, url: str) -> dict:
        self.page.goto(url, wait_until="load")
        return self.page.evaluate(MATHJAX_DONE_JS)

    def close(self):
        self.context.close()


def _shot(page: BookPage, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.page.screenshot(path=str(path), full_page=False)
    return path


def _lesson_url(server: str, nb: Path) -> str:
    return f"{server}lessons/{nb.stem}.html"


# ----------------------------------------------------------------------------- tests


NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_build_is_clean_and_within_budget(site, crawled):
    assert not site["warnings"], "the book builds with warnings:\n" + "\n".join(site["warnings"][:20])
    assert site["build_s"] < BUILD_BUDGET_S, f"the build took {site['build_s']:.0f} s (budget {BUILD_BUDGET_S} s)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    summary = {
        "build_s": round(site["build_s"], 1),
        "pages": len(crawled["pages"]),
        "links_checked": crawled["checked"],
    }
    (SHOTS / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def test_every_internal_link_resolves(crawled):
    assert len(crawled["pages"]) > 10 + len(NOTEBOOKS), sorted(crawled["pages"])
    assert not crawled["broken"], f"{len(crawled['broken'])} broken links:\n" + "\n".join(crawled["broken"][:30])


def test_teacher_only_answers_are_not_published(site, crawled):
    assert not (site["dir"] / "answers.html").exists()
    assert not any(url.endswith("/answers.html") for url in crawled["pages"])
    assert "marking" not in (site["dir"] / "searchindex.js").read_text().lower()


def test_every_page_loads_offline_with_math_rendered(browser, server, crawled):
    failures = []
    page = BookPage(browser, server)
    try:
        for url in sorted(crawled["pages"]):
            page.problems.clear()
            math = page.open(url)
            text = page.page.evaluate(VISIBLE_TEXT_JS)
            failures += [f"{url}: {p}" for p in page.problems]
            failures += [f"{url}: raw math text {r!r}" for r in raw_math(text)[:3]]
            failures += [f"{url}: MathJax error {e!r}" for e in math["errors"]]
            if "/lessons/" in url and math["typeset"] == 0:
                failures.append(f"{url}: a lesson with no typeset math")
    finally:
        page.close()
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures[:40])


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lesson_shows_every_figure_and_its_links(browser, server, crawled, nb):
    url = _lesson_url(server, nb)
    assert url in crawled["pages"], f"{nb.name} has no page in the book"
    page = BookPage(browser, server)
    try:
        page.open(url)
        images = page.page.evaluate(IMAGES_JS)
        want = expected_figures(nb)
        assert len(images) == want, f"{len(images)} figures shown, the notebook has {want}"
        assert all(i["ok"] for i in images), [i["src"] for i in images if not i["ok"]]
        # the live-kernel note beside each explorer, with the command that gives a kernel
        notes = page.page.locator(".live-kernel")
        assert notes.count() == explorer_count(nb)
        for i in range(notes.count()):
            assert "./run.sh lab" in notes.nth(i).inner_text()
        # download: the committed notebook, byte for byte
        link = page.page.locator(".lesson-header a.download").first
        href = urllib.parse.urljoin(url, link.get_attribute("href"))
        with urllib.request.urlopen(href, timeout=10) as r:
            assert r.read() == nb.read_bytes(), "the download is not the committed notebook"
        # previous / next
        assert page.page.locator("a.prev-page").count() == 1 and page.page.locator("a.next-page").count() == 1
        # lesson -> API: every name in the header is a resolved link, and each API page links back
        header = page.page.locator(".lesson-header li")
        names = header.locator("code").count()
        links = header.locator("a.reference.internal code").count()
        assert names > 0 and links == names, f"{names - links} of the lesson's API names are not linked"
        targets = header.locator("a.reference.internal").evaluate_all("as => as.map(a => a.href.split('#')[0])")
        for href in sorted({h for h in targets if "/api/" in h}):
            back = {
                urllib.parse.urljoin(href, ref).split("#")[0] for tag, ref in crawled["pages"][href].refs if tag == "a"
            }
            assert url in back, f"{href} does not link back to {nb.name}"
    finally:
        page.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [("memory_step", "api/memtutor.memory.html"), ("prioritized", "lessons/03_prioritized_replay.html")],
    ids=["function-by-name", "lesson-by-title-word"],
)
def test_search_finds(browser, server, query, expected):
    page = BookPage(browser, server)
    try:
        page.open(f"{server}search.html?q={query}")
        page.page.wait_for_selector("#search-results ul.search li", timeout=SEARCH_S * 1000)
        hrefs = page.page.locator("#search-results ul.search li a").evaluate_all("as => as.map(a => a.href)")
        assert any(h.split("#")[0].split("?")[0] == server + expected for h in hrefs), hrefs[:10]
        assert not page.problems, page.problems
        _shot(page, f"search_{query}.png")
    finally:
        page.close()


def test_book_opens_from_the_file_system(browser, site):
    """The README says to open ``_build/book/index.html``: the book must work without a server too."""
    base = site["dir"].as_uri() + "/"
    page = BookPage(browser, base)
    try:
        for rel in ("index.html", "lessons/01_memory_bank.html"):
            math = page.open(base + rel)
            assert not math["errors"], math["errors"]
            if "lessons" in rel:
                assert math["typeset"] > 0
                assert not raw_math(page.page.evaluate(VISIBLE_TEXT_JS))
        assert not page.problems, page.problems
    finally:
        page.close()


def test_screenshots(browser, server):
    shots = {
        "home.png": "index.html",
        "lesson_01_memory_bank.png": "lessons/01_memory_bank.html",
        "api_memtutor_memory.png": "api/memtutor.memory.html",
    }
    page = BookPage(browser, server)
    try:
        for name, rel in shots.items():
            page.open(server + rel)
            assert _shot(page, name).stat().st_size > 10_000
        assert not page.problems, page.problems
    finally:
        page.close()
    assert os.path.isdir(SHOTS)
