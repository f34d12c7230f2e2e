#!/usr/bin/env bash
# memtutor's two entry points, and the book. Each sets up a virtual environment in .venv when
# needed (idempotent: a second run skips what is already installed) and then:
#   ./run.sh lab    open JupyterLab on notebooks/
#   ./run.sh book   build the collection as a static site into _build/book/ (Sphinx + myst-nb, from the
#                   committed, executed notebooks; nothing is re-executed) and say how to open it.
#                   Extra arguments go to sphinx-build (e.g. -E for a full rebuild).
#   ./run.sh test   lint and format check (ruff), type check (mypy on memtutor/), then every test:
#                   unit tests, benchmark smoke tests, every notebook under nbval, the notebooks run
#                   from the installed wheel outside the clone, and the JupyterLab browser test.
#                   Extra arguments go to pytest: ./run.sh test -m "not slow" is the quick loop.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=${MEMTUTOR_VENV:-.venv}

setup() {  # setup EXTRAS  (e.g. "lab" or "test,bench")
    local extras=$1
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[memtutor] creating virtual environment in $VENV"
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.memtutor-$(echo "$extras" | tr ',' '-')"
    local want
    want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "[memtutor] environment up to date ($extras)"
    else
        echo "[memtutor] installing memtutor[$extras] under constraints.txt"
        # (the grep drops pip's notes about local package indexes some machines configure)
        "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | { grep -v "is neither a file nor a directory" || true; }
        "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[$extras]" 2>&1 \
            | { grep -v -e "is neither a file nor a directory" || true; }
        echo "$want" > "$stamp"
    fi
}

ensure_browser() {  # Debian's Chromium for the JupyterLab browser test (tests/test_lab_browser.py)
    if command -v chromium >/dev/null 2>&1 || [ -n "${MEMTUTOR_CHROMIUM:-}" ]; then
        return 0
    fi
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "[memtutor] installing Debian's chromium for the browser test"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "[memtutor] could not install chromium: the browser test will be skipped with this reason"
    else
        echo "[memtutor] chromium is missing and cannot be installed here (not root or no apt-get):" \
             "the browser test will be skipped; install it with your package manager"
    fi
}

case "${1:-}" in
    lab)
        setup lab
        root_flag=()
        [ "$(id -u)" = "0" ] && root_flag=(--allow-root)  # containers often run as root
        exec "$VENV/bin/python" -m jupyter lab "${root_flag[@]}" notebooks/ "${@:2}"
        ;;
    book)
        setup docs
        echo "[memtutor] building the book into _build/book (the committed notebooks, not re-executed)"
        start=$(date +%s)
        "$VENV/bin/python" -m sphinx -b html -q docs _build/book -d _build/doctrees "${@:2}"
        echo "[memtutor] built in $(( $(date +%s) - start )) s: open _build/book/index.html in a browser," \
             "or serve it with: $VENV/bin/python -m http.server -d _build/book 8000 (then http://localhost:8000)"
        ;;
    test)
        setup test,bench,docs
        echo "[memtutor] ruff check, ruff format --check, mypy memtutor"
        "$VENV/bin/ruff" check --quiet .
        "$VENV/bin/ruff" format --check --quiet .
        "$VENV/bin/mypy" memtutor
        ensure_browser
        # One thread per worker: 2 xdist workers on 2 cores; --dist loadfile keeps every cell of a
        # notebook on one worker and one kernel.
        export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MEMTUTOR_THREADS=1
        exec "$VENV/bin/python" -m pytest -n "${MEMTUTOR_WORKERS:-2}" --dist loadfile \
            --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --durations=15 \
            "${@:2}"   # no path given: pyproject testpaths (tests, notebooks)
        ;;
    *)
        echo "usage: ./run.sh lab | ./run.sh test [pytest args] | ./run.sh book [sphinx-build args]" >&2
        exit 2
        ;;
esac
