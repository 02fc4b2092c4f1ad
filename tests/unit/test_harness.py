"""The test harness itself: `make test` runs on both cores and each chapter executes
once."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TOY = """
import pytest
GROUPS = [pytest.param(g, marks=pytest.mark.xdist_group(g)) for g in ("a", "b", "c", "d")]

@pytest.mark.parametrize("g", GROUPS)
def test_one(g):
    pass

@pytest.mark.parametrize("g", GROUPS)
def test_two(g):
    pass

@pytest.mark.xdist_group("a")
def test_three():
    pass
"""


def test_make_test_runs_in_parallel_and_xdist_groups_keep_a_chapters_tests_on_one_worker(
    tmp_path,
):
    # the chapter tests rely on it: a chapter is executed once per worker, so all tests
    # reading it must run on the same worker (pytest 9.2 silently broke this:
    # pytest-xdist issue 1386)
    make_test = next(
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "-m pytest" in line and "-m full" not in line
    )
    assert "-n auto" in make_test and "--dist loadgroup" in make_test
    (tmp_path / "test_toy.py").write_text(TOY)
    (tmp_path / "empty.ini").write_text("[pytest]\n")  # not the project's settings
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-v",
            "-p",
            "no:cacheprovider",
            "-c",
            str(tmp_path / "empty.ini"),
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_toy.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # loadgroup names each grouped test "...@group" (pytest 9.2 drops the suffix, and
    # the grouping)
    runs = re.findall(r"\[(gw\d)\] .*?PASSED \S*::\S+?(?:@(\w+))?\s", run.stdout)
    assert len(runs) == 9 and all(group for _, group in runs), run.stdout
    workers = {}
    for worker, group in runs:
        workers.setdefault(group, set()).add(worker)
    assert sorted(workers) == ["a", "b", "c", "d"]
    assert all(len(w) == 1 for w in workers.values()), workers
