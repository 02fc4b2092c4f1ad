"""The run/sweep command on a tiny stand-in chapter (fast: no training)."""

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from backdoor_utils.tooling import cli
from tests.conftest import write_tiny_notebook


@pytest.fixture()
def tiny_notebook(tmp_path):
    return write_tiny_notebook(tmp_path / "00_tiny.ipynb")


def test_unknown_parameter_is_an_error_listing_valid_ones(tiny_notebook):
    with pytest.raises(
        cli.UsageError,
        match=(
            "poison_rat: not a parameter of 00_tiny.ipynb; valid parameters: seed,"
            " poison_rate"
        ),
    ):
        cli.check_parameters(tiny_notebook, {"poison_rat": 0.1})


def test_invalid_value_is_rejected_before_running(tiny_notebook, tmp_path, capsys):
    code = cli.main(
        [
            "run",
            str(tiny_notebook),
            "-p",
            "poison_rate",
            "1.5",
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    assert (
        "poison_rate: must be a number in the open interval (0, 1)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()


def test_parse_value_reads_python_literals():
    assert cli.parse_value("0.005") == 0.005
    assert cli.parse_value("None") is None
    assert cli.parse_value("[1, 2]") == [1, 2]
    assert cli.parse_value("cpu") == "cpu"


def test_run_names_are_readable_and_never_shared():
    assert cli.run_slug({}) == "defaults"
    assert cli.run_slug({"seed": 3}).startswith("seed=3-")
    assert cli.run_slug({"runs": [1, 2]}) != cli.run_slug(
        {"runs": [[1, 2]]}
    )  # same readable part
    long_a = {"attacks": ["patch"] * 40, "seed": 0}
    long_b = {
        "attacks": ["patch"] * 40,
        "seed": 1,
    }  # differ only beyond the readable cut
    assert cli.run_slug(long_a) != cli.run_slug(long_b)
    assert len(cli.run_slug(long_a)) <= 170


def test_run_writes_named_output_and_prints_glued_values(
    tiny_notebook, tmp_path, capsys
):
    code = cli.main(
        [
            "run",
            str(tiny_notebook),
            "-p",
            "poison_rate",
            "0.2",
            "-p",
            "seed",
            "3",
            "--runs-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    (out,) = (tmp_path / "00_tiny").glob("*.ipynb")
    assert out.name == cli.run_slug({"poison_rate": 0.2, "seed": 3}) + ".ipynb"
    assert out.name.startswith("poison_rate=0.2_seed=3-")
    nb = nbformat.read(str(out), as_version=4)
    assert (
        "poison_rate = 0.2" in nb.cells[1].source
        and "rerun-banner" in nb.cells[1].metadata["tags"]
    )
    injected = [
        c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])
    ]
    assert injected and "poison_rate = 0.2" in injected[0].source
    printed = capsys.readouterr().out
    assert "asr" in printed and "0.4300" in printed


def test_sweep_records_failures_and_resumes_without_rerunning(
    tiny_notebook, tmp_path, capsys
):
    args = [
        "sweep",
        str(tiny_notebook),
        "-g",
        "poison_rate",
        "0.1,0.6",
        "-g",
        "seed",
        "0,1",
        "--workers",
        "2",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "grid",
    ]
    assert cli.main(args) == 1  # the 0.6 runs fail inside the notebook
    sweep = tmp_path / "grid"
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    assert len(rows) == 4
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 2 and len(failed) == 2
    assert all("poison rate too high" in r["error"] for r in failed)
    assert sorted(round(float(r["asr"]), 6) for r in ok) == [0.2, 0.21]
    assert (sweep / "results.png").stat().st_size > 0
    assert (
        len(list(sweep.glob("*.failed.ipynb"))) == 2
    )  # the failed notebooks came back for inspection
    done = {
        p.name: p.stat().st_mtime_ns
        for p in sweep.glob("*.ipynb")
        if not p.name.endswith(".failed.ipynb")
    }
    assert len(done) == 2
    capsys.readouterr()

    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "4 runs, 2 already done, 2 to run" in err  # only the failed runs again
    # the two finished runs glued different setups (the stand-in's "setup <seed>"):
    # said, and listed
    assert "computed on 2 different setups" in err and "(1) setup 0; (2) setup 1" in err
    assert [
        r["computed_with"] for r in csv.DictReader(open(sweep / "results.csv"))
    ] == ["setup 0", "setup 1", "", ""]
    assert {
        p.name: p.stat().st_mtime_ns for p in sweep.glob("*.ipynb") if p.name in done
    } == done


def test_sweep_records_fixed_parameters_beside_the_grid(
    tiny_notebook, tmp_path, capsys
):
    args = [
        "sweep",
        str(tiny_notebook),
        "-g",
        "poison_rate",
        "0.1,0.2",
        "-p",
        "seed",
        "2",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "fixed",
    ]
    assert cli.main(args) == 0
    assert (
        "different setups" not in capsys.readouterr().err
    )  # one setup: nothing to warn about
    rows = list(csv.DictReader(open(tmp_path / "fixed" / "results.csv")))
    assert [(r["poison_rate"], r["seed"], r["computed_with"]) for r in rows] == [
        ("0.1", "2", "setup 2"),
        ("0.2", "2", "setup 2"),
    ]
    assert sorted(round(float(r["asr"]), 6) for r in rows) == [0.22, 0.42]


def test_sweep_validates_the_whole_grid_first(tiny_notebook, tmp_path):
    code = cli.main(
        [
            "sweep",
            str(tiny_notebook),
            "-g",
            "poison_rate",
            "0.1,2.0",
            "--runs-dir",
            str(tmp_path),
            "--name",
            "bad",
        ]
    )
    assert code == 2
    assert not (tmp_path / "bad").exists()


def _kernel_reporting_notebook(path):
    """A notebook that glues its parameter and how its kernel's sockets are reached."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell("seed = 0")
    params.metadata["tags"] = ["parameters"]
    report = (
        "import json\nfrom ipykernel.connect import get_connection_info\nfrom myst_nb"
        " import glue\ninfo = json.loads(get_connection_info())\nglue('seed', seed,"
        " display=False)\nglue('transport', info['transport'],"
        " display=False)\nglue('shell', f\"{info['ip']}-{info['shell_port']}\","
        " display=False)"
    )
    nb.cells = [params, nbformat.v4.new_code_cell(report)]
    nbformat.write(nb, str(path))
    return path


@pytest.mark.skipif(os.name != "posix", reason="socket files are a Unix transport")
def test_kernels_started_side_by_side_each_get_sockets_no_other_process_can_take(
    tmp_path,
):
    # TCP ports picked free by jupyter_client can be bound by another process before the
    # kernel binds them ("Address already in use": the kernel dies at start; seen once
    # in make test, where two xdist workers and the Dask test start processes at the
    # same moments). A kernel of ours listens on socket files in a directory of its own
    # instead - here four at once, from one directory.
    notebook = _kernel_reporting_notebook(tmp_path / "report.ipynb")
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(
            pool.map(
                lambda s: cli.execute(
                    notebook, {"seed": s}, tmp_path / f"out{s}.ipynb"
                ),
                range(4),
            )
        )
    assert [run["seed"] for run in runs] == list(
        range(4)
    )  # each run answered by its own kernel
    assert {run["transport"] for run in runs} == {"ipc"}
    sockets = {run["shell"] for run in runs}
    assert len(sockets) == 4 and not any(
        tmp_path in Path(s).parents for s in sockets
    )  # not in the shared cwd
    assert not any(
        Path(s).exists() or Path(s).parent.exists() for s in sockets
    )  # cleaned up


def test_a_socket_path_too_long_for_the_system_leaves_the_kernel_on_tcp():
    assert (
        cli._socket_file_config(Path("/tmp/bk-kernel-x"))["KernelManager"]["transport"]
        == "ipc"
    )
    assert "KernelManager" not in cli._socket_file_config(
        Path("/tmp") / ("d" * 120)
    )  # bind would fail
