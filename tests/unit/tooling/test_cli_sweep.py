"""A sweep on a real Dask cluster on 127.0.0.1: a scheduler and two workers in their own
processes, one of them killed mid-sweep. Dask reschedules its run; no finished result is
lost; a rerun skips everything done; the results equal a local run's."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backdoor_utils.tooling import cli
from tests.conftest import write_tiny_notebook

DASK = Path(sys.executable).with_name("dask")


@pytest.fixture()
def slow_tiny_notebook(tmp_path):
    return write_tiny_notebook(tmp_path / "00_tiny.ipynb", sleep_s=1.5)


@pytest.fixture()
def cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes; yields (address, worker
    processes)."""
    file = tmp_path / "scheduler.json"
    common = dict(
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    procs = [
        subprocess.Popen(
            [
                str(DASK),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
            ],
            **common,
        )
    ]
    deadline = time.time() + 30
    while not file.exists() and time.time() < deadline:
        time.sleep(0.1)
    address = json.loads(file.read_text())["address"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [
                str(DASK),
                "worker",
                address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            env=env,
            **common,
        )
        for _ in range(2)
    ]
    procs += workers
    from dask.distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
    try:
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _rows(path):
    return [
        {k: v for k, v in row.items() if k != "duration_s"}
        for row in csv.DictReader(open(path))
    ]


def test_sweep_survives_a_killed_worker_and_matches_the_local_run(
    slow_tiny_notebook, tmp_path, cluster, capsys
):
    address, workers = cluster
    sweep = tmp_path / "remote"
    args = [
        "sweep",
        str(slow_tiny_notebook),
        "-g",
        "poison_rate",
        "0.1,0.2",
        "-g",
        "seed",
        "0,1",
        "--runs-dir",
        str(tmp_path),
    ]

    seen = []

    def kill_one_worker_after_the_first_result():
        deadline = time.time() + 60
        while not list((sweep / "records").glob("*.json")) and time.time() < deadline:
            time.sleep(0.05)
        seen.append(
            len(list((sweep / "records").glob("*.json")))
        )  # written as results arrive
        os.killpg(
            workers[0].pid, signal.SIGKILL
        )  # mid-sweep: its current run is lost with it

    killer = threading.Thread(target=kill_one_worker_after_the_first_result)
    killer.start()
    assert cli.main(args + ["--scheduler", address, "--name", "remote"]) == 0
    killer.join()
    assert workers[0].poll() is not None  # the worker really died during the sweep
    assert (
        1 <= seen[0] < 4
    )  # ... after the first result was on disk and before the last
    remote = _rows(sweep / "results.csv")
    assert len(remote) == 4 and all(r["status"] == "ok" for r in remote)
    assert (
        len(list(sweep.glob("*.ipynb"))) == 4
    )  # every executed notebook came back to the client
    capsys.readouterr()

    assert cli.main(args + ["--scheduler", address, "--name", "remote"]) == 0
    assert "4 runs, 4 already done, 0 to run" in capsys.readouterr().err

    assert cli.main(args + ["--workers", "2", "--name", "local"]) == 0
    assert (
        _rows(tmp_path / "local" / "results.csv") == remote
    )  # same grid, same results (durations aside)
