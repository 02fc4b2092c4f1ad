"""The package and its tests read like the notebooks: black at 88 columns, and ruff's checks."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [str(ROOT / "backdoor_utils"), str(ROOT / "tests")]


def test_the_package_and_tests_are_formatted_by_black():
    run = subprocess.run(
        [sys.executable, "-m", "black", "--check", *SOURCES],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, f"run `make format`:\n{run.stderr}"


def test_the_package_and_tests_pass_the_linter():
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", *SOURCES],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
