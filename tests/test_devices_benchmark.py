"""The per-device benchmark runs every lesson's training path (tiny sizes) and fails loudly."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_lesson_runs_one_update_on_the_cpu(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "devices.py"), "--quick", "--devices", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["failed"] == []
    lessons = {row["lesson"] for row in report["rows"]}
    assert lessons == {"01", "02 controller", "02 LSTM", "03", "04", "05", "06", "07"}
    assert all(row["device"] == "cpu" and row["wall_ms"] > 0 and row["cpu_ms"] >= 0 for row in report["rows"])


def test_a_failing_lesson_makes_the_benchmark_fail():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "devices.py"), "--quick", "--devices", "meta", "--lessons", "04"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED 04 on meta" in proc.stdout
