"""The book's sources, made from the repository at each build, and its cross-links.

Sphinx reads ``docs/``. Before it does, :func:`generate` writes the pages that follow from files
kept elsewhere, into git-ignored folders:

* ``docs/lessons/NN_topic.ipynb``: each committed notebook with its committed outputs (nothing is
  re-executed), plus a box under the title (download link, the package API the lesson uses) and a
  note under each ipywidgets explorer. An explorer's saved widget state holds the output it showed
  when the notebook was executed; that static output replaces the widget, which needs a kernel.
  tqdm progress widgets become their final text line.
* ``docs/api/``: one page per module of the package (autodoc), each naming the lessons that use it.
* ``docs/_gen/``: fragments the hand-written pages include (README sections with their links
  pointing into the book, the benchmarks' docstrings).

Which lesson uses what is read from the notebooks' code (imports and ``module.name`` accesses),
so the links in both directions follow the notebooks as they change.
"""

from __future__ import annotations

import ast
import copy
import functools
import html
import importlib
import inspect
import json
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
NOTEBOOKS = ROOT / "notebooks"
LESSONS = DOCS / "lessons"
API = DOCS / "api"
GEN = DOCS / "_gen"

# Pages of docs/ kept out of the book (conf.py excludes them), and links to them turned into text.
TEACHER_ONLY = ("answers.md",)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# The API reference groups modules by role; each group lists its modules in this order.
API_GROUPS = [
    (
        "Lesson modules",
        "What each lesson builds and checks.",
        [
            "memory",
            "controller",
            "tasks",
            "replay",
            "_replay_fast",
            "meta",
            "continual",
            "tool_agent",
            "memup",
            "tmaze",
            "memory_agent",
        ],
    ),
    (
        "Experiments",
        "What each notebook runs: seed loops, grids, ablations, cached-result configurations.",
        ["experiments"],
    ),
    ("Exercise checks", "The check each exercise's check cell calls.", ["exercises"]),
    ("Shared helpers and the course kit", "", ["utils", "diagrams", "course"]),
]


# ----------------------------------------------------------------------------- notebooks


def lesson_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _write_if_changed(path: Path, text: str) -> None:
    """Write only when the text differs, so that Sphinx's incremental build skips unchanged pages."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


@dataclass
class Usage:
    """The package names one lesson uses: canonical module -> names."""

    names: dict[str, set[str]] = field(default_factory=dict)

    def add(self, module: str, name: str | None = None) -> None:
        entry = self.names.setdefault(module, set())
        if name:
            entry.add(name)


def _canonical(module: str, name: str) -> tuple[str, str | None] | None:
    """(module that defines it, its name there) for ``module.name``; None when it is not the package's."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    if not hasattr(mod, name):
        try:
            importlib.import_module(f"{module}.{name}")
            return f"{module}.{name}", None
        except ImportError:
            return None
    obj = getattr(mod, name)
    if inspect.ismodule(obj):
        return (obj.__name__, None) if obj.__name__.startswith("memtutor") else None
    if name.startswith("_"):
        return None  # private: a lesson may open it up, but it is not part of the API reference
    home = getattr(obj, "__module__", None)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and home and home.startswith("memtutor"):
        return home, obj.__qualname__
    if name.startswith("_") or name not in _documented_constants(module):
        return None
    return module, name  # a constant: documented where it is defined


@functools.cache
def _documented_constants(module: str) -> frozenset[str]:
    """The module's constants that have a ``#:`` doc comment: those the API reference shows."""
    from sphinx.pycode import ModuleAnalyzer

    return frozenset(name for (scope, name) in ModuleAnalyzer.for_module(module).find_attr_docs() if not scope)


def _strip_magics(src: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())


def lesson_usage(nb: dict[str, Any]) -> Usage:
    """The package modules and names a notebook's code cells import or access."""
    usage = Usage()
    aliases: dict[str, str] = {}  # local name -> memtutor module
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(_strip_magics(_source(cell)))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("memtutor"):
                        aliases[a.asname or a.name] = a.name
                        usage.add(a.name)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("memtutor"):
                for a in node.names:
                    found = _canonical(node.module or "", a.name)
                    if found is None:
                        continue
                    module, name = found
                    if name is None:
                        aliases[a.asname or a.name] = module
                    usage.add(module, name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                found = _canonical(aliases[node.value.id], node.attr)
                if found is not None:
                    usage.add(*found)
    return usage


def _title(nb: dict[str, Any]) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in _source(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def _strip_tags(value: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", value)).strip()


def _widget_children(state: dict[str, Any], model_id: str) -> list[str]:
    model = state.get(model_id, {}).get("state", {})
    return [c.removeprefix("IPY_MODEL_") for c in model.get("children", [])]


def _controls(state: dict[str, Any], model_id: str) -> list[str]:
    """The labels of an explorer's controls (slider, dropdown, ... descriptions), in order."""
    labels = []
    for child in _widget_children(state, model_id):
        model = state.get(child, {})
        if model.get("model_name") != "OutputModel":
            label = model.get("state", {}).get("description", "")
            if label:
                labels.append(label)
    return labels


def _static_outputs(state: dict[str, Any], model_id: str) -> list[dict[str, Any]] | None:
    """What a widget showed when the notebook was executed, as notebook outputs; None if unknown.

    An ``interact`` explorer is a box of controls and an Output widget, whose saved outputs are
    the figure or text of the controls' starting values. A tqdm bar is a box of an HTML label, a
    progress bar and an HTML counter: its final line is returned as text.
    """
    model = state.get(model_id)
    if model is None:
        return None
    children = _widget_children(state, model_id)
    outputs = [
        copy.deepcopy(o)
        for c in children
        if state.get(c, {}).get("model_name") == "OutputModel"
        for o in state[c]["state"].get("outputs", [])
    ]
    if outputs:
        return outputs
    names = [state.get(c, {}).get("model_name") for c in children]
    if "FloatProgressModel" in names or "IntProgressModel" in names:
        parts = []
        for c in children:
            child = state.get(c, {})
            if child.get("model_name") == "HTMLModel":
                parts.append(_strip_tags(child["state"].get("value", "")))
            elif child.get("model_name") in ("FloatProgressModel", "IntProgressModel"):
                s = child["state"]
                filled = round(10 * s.get("value", 0) / (s.get("max") or 1))
                parts.append("|" + "█" * filled + " " * (10 - filled) + "|")
        return [{"output_type": "stream", "name": "stdout", "text": " ".join(p for p in parts if p) + "\n"}]
    return None


def is_explorer(cell: dict[str, Any]) -> bool:
    """The collection's marker of an ipywidgets explorer cell (as the lab browser test reads it)."""
    src = _source(cell)
    return cell["cell_type"] == "code" and "interact" in src and src.lstrip().startswith("# NBVAL_IGNORE_OUTPUT")


def _md_cell(text: str, cell_id: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": text}


def _api_line(usage: Usage) -> str:
    parts = []
    for module in sorted(usage.names):
        names = sorted(usage.names[module], key=str.lower)
        refs = ", ".join(f"{{py:obj}}`~{module}.{n}`" for n in names)
        parts.append(f"- {{doc}}`{module} </api/{module}>`" + (f": {refs}" if refs else ""))
    return "\n".join(parts)


LIVE_NOTE = """:::{{admonition}} A live explorer: it needs a running kernel
:class: note live-kernel
In JupyterLab this cell shows controls ({controls}) that redraw its output as you move them.
Widgets run in a live Python kernel, which a static page does not have: above is the output the
committed notebook shows for the controls' starting values. To move them, open the notebook in a
lab: `./run.sh lab` in a clone of the collection (or `pip install` the package and run
`jupyter lab {name}`), then run the notebook.
:::
"""

HEADER = """:::{{admonition}} This lesson as a notebook
:class: tip lesson-header
This page shows the committed notebook with the outputs it printed when it was executed; the
book does not run it. {{download}}`Download {name} <../../notebooks/{name}>` and run it with
`./run.sh lab` in a clone, or in any Jupyter with the package installed.

**The package API this lesson uses:**

{api}
:::
"""


def book_notebook(path: Path) -> tuple[dict[str, Any], Usage]:
    """The notebook as the book shows it, and what it uses of the package."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    usage = lesson_usage(nb)
    state = nb.get("metadata", {}).pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    cells: list[dict[str, Any]] = []
    for index, cell in enumerate(nb["cells"]):
        explorer_controls: list[str] | None = None
        if cell["cell_type"] == "code":
            outputs = []
            for out in cell.get("outputs", []):
                view = out.get("data", {}).get(WIDGET_VIEW)
                if view is None:
                    outputs.append(out)
                    continue
                static = _static_outputs(state, view.get("model_id", ""))
                if static is None:
                    data = {k: v for k, v in out["data"].items() if k != WIDGET_VIEW}
                    if data:
                        outputs.append({**out, "data": data})
                else:
                    outputs.extend(static)
                if is_explorer(cell):
                    explorer_controls = _controls(state, view.get("model_id", ""))
            cell = {**cell, "outputs": outputs}
        cells.append(cell)
        if index == 0:
            cells.append(_md_cell(HEADER.format(name=path.name, api=_api_line(usage)), "book-lesson-header"))
        if explorer_controls is not None:
            controls = ", ".join(explorer_controls) or "sliders"
            cells.append(_md_cell(LIVE_NOTE.format(controls=controls, name=path.name), f"book-live-note-{index}"))
    nb["cells"] = cells
    return nb, usage


# ----------------------------------------------------------------------------- API pages


def package_modules() -> list[str]:
    """Every module of the package, in the API groups' order."""
    import memtutor

    found = sorted(m.name for m in pkgutil.walk_packages(memtutor.__path__, "memtutor.") if "checkpoints" not in m.name)
    ordered: list[str] = []
    for _, _, keys in API_GROUPS:
        for key in keys:
            prefix = f"memtutor.{key}"
            ordered += [m for m in found if (m == prefix or m.startswith(prefix + ".")) and m not in ordered]
    return ordered + [m for m in found if m not in ordered]


def _lesson_refs(lessons: list[str]) -> str:
    return ", ".join(f"{{doc}}`/lessons/{stem}`" for stem in lessons)


def api_pages(users: dict[str, list[str]]) -> dict[str, str]:
    """Page name -> MyST text of the API reference (an index and one page per module)."""
    modules = package_modules()
    pages: dict[str, str] = {}
    for module in modules:
        head = f"# `{module}`\n\n"
        if users.get(module):
            head += f"Used in: {_lesson_refs(users[module])}.\n\n"
        pages[module] = head + (
            f"```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n   :undoc-members:\n   :show-inheritance:\n```\n"
        )
    index = [
        "# API reference\n",
        "Generated from the package's docstrings (tensor shapes included). Each module names the lessons",
        "that use it, each function the lessons that call it, and each lesson lists what it uses.\n",
    ]
    for title, blurb, keys in API_GROUPS:
        group = [m for m in modules if any(m == f"memtutor.{k}" or m.startswith(f"memtutor.{k}.") for k in keys)]
        index += [f"## {title}\n", blurb + "\n" if blurb else ""]
        index += ["```{toctree}", ":maxdepth: 1", "", *group, "```\n"]
    pages["index"] = "\n".join(index)
    return pages


# ----------------------------------------------------------------------------- README, benchmarks


def _section(text: str, heading: str) -> str:
    """The body of a Markdown section (``## heading``) up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading) + 1
    end = len(lines)
    for i in range(start, len(lines)):
        m = re.match(r"(#+) ", lines[i])
        if m and len(m.group(1)) <= level:
            end = i
            break
    return "\n".join(lines[start:end]).strip() + "\n"


def _book_links(text: str) -> str:
    """README links to repository files, rewritten to the book's pages."""
    text = re.sub(r"\]\(notebooks/([0-9][0-9]_\w+)\.ipynb\)", r"](lessons/\1.ipynb)", text)
    return text.replace("](docs/teaching.md)", "](teaching.md)").replace("](CONTRIBUTING.md)", "](contributing.md)")


def readme_fragments() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    title = next(line for line in readme.splitlines() if line.startswith("# "))
    intro = _section(readme, title)
    intro = intro[: intro.index("## ")] if "## " in intro else intro
    quick = _section(readme, "## Quick start")
    quick = quick[: quick.index("### ")] if "### " in quick else quick
    return {
        "readme_intro": _book_links(intro),
        "readme_quickstart": _book_links(quick),
        "readme_notebooks": _book_links(_section(readme, "## The notebooks")),
    }


def _rst_literal_blocks(doc: str) -> str:
    """Make a docstring's indented command lines a literal block (``::``) rather than a block quote."""
    out: list[str] = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        starts_block = line.startswith("    ") and (i == 0 or not lines[i - 1].strip())
        if starts_block and not (out and out[-2:-1] and out[-2].rstrip().endswith("::")):
            out += ["::", ""]
        out.append(line)
    return "\n".join(out)


def benchmarks_fragment() -> str:
    parts = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first, _, rest = doc.partition("\n")
        body = _rst_literal_blocks(rest.strip())
        parts.append(f"## `benchmarks/{path.name}`\n\n**{first.strip()}**\n\n```{{eval-rst}}\n{body}\n```\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the build


@dataclass
class Book:
    """What :func:`generate` made: each lesson's usage, and who uses each module and object."""

    lessons: dict[str, Usage]
    module_users: dict[str, list[str]]
    object_users: dict[str, list[str]]


def generate() -> Book:
    """Write the generated sources under ``docs/`` and return the cross-link maps."""
    lessons: dict[str, Usage] = {}
    keep = set()
    for path in lesson_notebooks():
        nb, usage = book_notebook(path)
        lessons[path.stem] = usage
        target = LESSONS / path.name
        keep.add(target)
        _write_if_changed(target, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    for stale in LESSONS.glob("*.ipynb"):
        if stale not in keep:
            stale.unlink()
    module_users: dict[str, list[str]] = {}
    object_users: dict[str, list[str]] = {}
    for stem, usage in lessons.items():
        for module, names in usage.names.items():
            module_users.setdefault(module, []).append(stem)
            for name in names:
                object_users.setdefault(f"{module}.{name}", []).append(stem)
    for page, text in api_pages(module_users).items():
        _write_if_changed(API / f"{page}.md", text)
    for name, text in readme_fragments().items():
        _write_if_changed(GEN / f"{name}.md", text)
    _write_if_changed(GEN / "benchmarks.md", benchmarks_fragment())
    return Book(lessons, module_users, object_users)


def join_literals(lines: list[str]) -> list[str]:
    """Docstring lines with a ``literal`` that spans two lines joined into one.

    reST allows it, but napoleon reads a section entry line by line and would split such a
    literal at a colon inside it.
    """
    out: list[str] = []
    for line in lines:
        if out and out[-1].count("``") % 2 == 1:
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return out


def rst_safe(line: str) -> str:
    """A docstring line with the plain-text characters reST would misread escaped.

    The package's docstrings are plain text with reST roles and ``literals``; formulas in them
    use ``|x|`` (an absolute value, a substitution to reST) and a lone ``*`` (a product or a
    star-unpacking, an unclosed emphasis to reST). Literals and roles are left as they are.
    """
    parts = re.split(r"(``.*?``|:\w+:`[^`]*`)", line)
    body = [i for i in range(0, len(parts), 2)]
    stars = sum(parts[i].count("*") for i in body)
    bullet = re.match(r"\s*\* ", line) is not None
    if bullet:
        stars -= 1
    for i in body:
        parts[i] = parts[i].replace("|", "\\|")
        if stars == 1:
            head = ""
            if bullet and i == 0:
                m = re.match(r"\s*\* ", parts[i])
                assert m is not None
                head, parts[i] = parts[i][: m.end()], parts[i][m.end() :]
            parts[i] = head + parts[i].replace("*", "\\*")
    return "".join(parts)


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension: generate the sources, and add "Used in" lines to the API's docstrings."""
    book = generate()

    def plain_text(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
        lines[:] = [rst_safe(line) for line in join_literals(lines)]

    def used_in(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
        stems = book.object_users.get(name)
        if stems and what != "module":
            lines += ["", "*Used in:* " + ", ".join(f":doc:`/lessons/{s}`" for s in stems)]

    def teacher_only_links(app: Any, docname: str, source: list[str]) -> None:
        for name in TEACHER_ONLY:
            source[0] = re.sub(
                rf"\[[^\]]*\]\({re.escape(name)}\)",
                f"`docs/{name}` (teachers only: in the repository, not published in this book)",
                source[0],
            )

    app.connect("source-read", teacher_only_links)
    app.connect("autodoc-process-docstring", plain_text, priority=400)  # before napoleon (500)
    app.connect("autodoc-process-docstring", used_in, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
