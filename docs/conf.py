"""Sphinx configuration of the memtutor book: ``./run.sh book`` builds it into ``_build/book``.

The lessons are the committed, executed notebooks (myst-nb, execution off). Everything renders
offline: MathJax (SVG output) is served from the site itself (sphinx-mathjax-offline), the theme (furo) loads
no web fonts, and ipywidgets' JavaScript is not loaded (an explorer's static output is shown
instead; see ``_ext/memtutor_book.py``, which also writes the generated pages).
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "memtutor"
author = "memtutor contributors"
copyright = "memtutor contributors; code MIT, prose and figures CC BY 4.0"
release = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: no CDN at view time
    "memtutor_book",  # generated pages and lesson <-> API links
]

# answers.md is for teachers only: never published (links to it become plain text, see _ext).
exclude_patterns = ["_build", "_gen", "_ext", "answers.md", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"

# Notebooks: the committed outputs, never re-executed.
nb_execution_mode = "off"
nb_ipywidgets_js: dict = {}  # no widget manager from a CDN; explorers show their static output
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True  # notebooks put $$...$$ inside paragraphs, as Jupyter allows
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # notebooks number their sections from "##"

# API reference from the docstrings.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
python_use_unqualified_type_names = True

html_theme = "furo"
html_title = "memtutor: neural agents with memory"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None


def setup(app):
    # MathJax's SVG output: no web fonts to fetch, so the book also renders opened as a file.
    app.config.mathjax_path = "mathjax/tex-svg.js"
