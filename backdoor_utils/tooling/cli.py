"""Rerun chapters with other parameters, one at a time or as a grid (papermill).

python -m backdoor_utils run notebooks/01_pixel_trigger.ipynb -p poison_rate 0.005 -p
seed 3 python -m backdoor_utils sweep notebooks/01_pixel_trigger.ipynb -g poison_rate
0.001,0.01,0.1 -g seed 0,1,2 --workers 2 python -m backdoor_utils sweep ... --scheduler
tcp://HOST:8786   # on a running Dask cluster

Parameter names are checked against the notebook's own ``parameters`` cell and values by
the same validation the notebook runs, before anything executes. Outputs land in
``runs/``. Sweeps run on Dask distributed: an in-process ``LocalCluster`` by default, or
the cluster behind ``--scheduler``. A worker receives the notebook as text and returns
the executed notebook and its record, so workers need no shared file system (each has
its own install, verified MNIST and model cache).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import hashlib
import importlib.util
import io
import itertools
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from ..core.cache import atomic_write_bytes, atomic_write_text
from .chapters import HEADLINE_METRICS, error_outputs, glued_values
from ..orchestration.params import validate_parameters
from ..core.runtime import threads_per_worker

RUNS = Path(os.environ.get("BACKDOOR_RUNS", "runs"))


class UsageError(ValueError):
    """A command-line mistake, reported without a traceback."""


def parse_value(text: str):
    """Python literal if it parses (0.1, 3, None, [1, 2], 'x'), else the string
    itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_parameters(notebook: Path) -> dict:
    """The names and defaults declared in the notebook's ``parameters`` cell."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def check_parameters(notebook: Path, params: dict) -> None:
    """Unknown names (papermill would only warn) and invalid values raise
    :class:`UsageError`."""
    declared = notebook_parameters(notebook)
    unknown = [name for name in params if name not in declared]
    if unknown:
        raise UsageError(
            f"{', '.join(unknown)}: not a parameter of {notebook.name}; valid"
            f" parameters: {', '.join(declared)}"
        )
    try:
        validate_parameters(**params)
    except ValueError as err:
        raise UsageError(str(err)) from None


def run_slug(params: dict) -> str:
    """File-name-safe, readable name of a parameter set ("defaults" when empty).

    The readable part is shortened and stripped of unsafe characters, so it can collide
    (``[1, 2]`` and ``[[1, 2]]``, or two long names sharing a prefix); a short hash of
    the exact parameters keeps every parameter set's name its own.
    """
    if not params:
        return "defaults"
    parts = [
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
        for k, v in sorted(params.items())
    ]
    readable = re.sub(r"[^A-Za-z0-9_.=,+-]+", "", "_".join(parts).replace(" ", ""))[
        :160
    ]
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def _banner_cell(notebook: Path, params: dict):
    import nbformat

    listed = ", ".join(f"`{k} = {v!r}`" for k, v in params.items()) or "the defaults"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cell = nbformat.v4.new_markdown_cell(
        f"**Rerun of `{notebook.name}`** with {listed} (all other parameters at their"
        f" defaults), executed by `python -m backdoor_utils` on {stamp}. The injected"
        " values are in the cell tagged `injected-parameters` below the `parameters`"
        " cell."
    )
    cell.metadata["tags"] = ["rerun-banner"]
    return cell


def _socket_file_config(directory: Path):
    """Kernel-manager settings for a kernel that listens on socket files in
    ``directory`` (ZeroMQ's ipc transport) instead of TCP ports. jupyter_client picks
    TCP ports that are free when it looks, and another process starting at the same
    moment (the other pytest worker's kernel, a Dask worker) can bind one before the
    kernel does: the kernel then dies at start with "Address already in use"
    (nteract/papermill#511). Files in a directory of the kernel's own cannot be taken.
    Unix only, and only where the socket paths fit the system's limit (107 bytes on
    Linux; a long TMPDIR can exceed it): otherwise the kernel keeps TCP."""
    import zmq
    from traitlets.config import Config

    if (
        os.name != "posix"
        or len(os.fsencode(directory / "kernel-ipc-99")) > zmq.IPC_PATH_MAX_LEN
    ):
        return Config()
    return Config(
        {
            "KernelManager": {
                "transport": "ipc",
                "connection_file": str(directory / "kernel.json"),
            }
        }
    )


def execute(
    notebook: Path, params: dict, output: Path, kernel: str = "python3"
) -> dict:
    """Execute ``notebook`` with ``params`` into ``output`` (written atomically); return
    its glued values."""
    import nbformat
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.partial.ipynb")
    try:
        with tempfile.TemporaryDirectory(prefix="bk-kernel-") as sockets:
            papermill.execute_notebook(
                str(notebook),
                str(tmp),
                parameters=params,
                kernel_name=kernel,
                progress_bar=False,
                cwd=str(notebook.parent),
                config=_socket_file_config(Path(sockets)),
            )
    except Exception:
        if (
            tmp.exists()
        ):  # keep the failed notebook for inspection, next to where it would be
            os.replace(tmp, output.with_name(f"{output.stem}.failed.ipynb"))
        raise
    nb = nbformat.read(str(tmp), as_version=4)
    nb.cells.insert(1, _banner_cell(notebook, params))
    buffer = io.StringIO()
    nbformat.write(nb, buffer)
    atomic_write_text(output, buffer.getvalue())
    tmp.unlink(missing_ok=True)
    return glued_values(output)


def _table(values: dict) -> str:
    width = max((len(k) for k in values), default=4)
    lines = [f"{'name':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in values.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    notebook = Path(args.notebook)
    params = {name: parse_value(value) for name, value in args.param}
    check_parameters(notebook, params)
    output = Path(args.runs_dir) / notebook.stem / f"{run_slug(params)}.ipynb"
    print(f"running {notebook} -> {output}", file=sys.stderr)
    values = execute(notebook, params, output, args.kernel)
    print(_table(values))
    return 0


# --- sweeps
# ------------------------------------------------------------------------------------


def _run_one(
    notebook_name: str,
    notebook_text: str,
    params: dict,
    kernel: str,
    threads: int | None,
) -> dict:
    """One grid point, on a Dask worker: the notebook arrives as text and the executed
    notebook (or the failed one) goes back as text with the run's record. Never raises:
    a failure inside the notebook is a record with ``status`` "failed"."""
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(
            threads
        )  # inherited by the kernel: no oversubscription
    os.environ.setdefault("TQDM_DISABLE", "1")
    start = time.perf_counter()
    row = {"params": params, "status": "ok", "error": "", "metrics": {}}
    with tempfile.TemporaryDirectory(prefix="backdoor-sweep-") as tmp:
        source = Path(tmp) / notebook_name
        source.write_text(notebook_text)
        output = Path(tmp) / "out" / source.name
        failed = output.with_name(f"{output.stem}.failed.ipynb")
        try:
            row["metrics"] = execute(source, params, output, kernel)
        except Exception as err:  # recorded, the sweep goes on
            detail = "; ".join(error_outputs(failed)) if failed.exists() else ""
            row.update(
                status="failed",
                error=(detail or f"{type(err).__name__}: {err}").splitlines()[0][:500],
            )
        executed = output if row["status"] == "ok" else failed
        text = executed.read_text() if executed.exists() else None
    row["duration_s"] = round(time.perf_counter() - start, 1)
    return {"record": row, "notebook": text}


def _save(sweep_dir: Path, slug: str, result: dict) -> dict:
    """Write one finished run - its executed notebook and its record - atomically, as it
    arrives."""
    row = result["record"]
    if result["notebook"] is not None:
        name = f"{slug}.ipynb" if row["status"] == "ok" else f"{slug}.failed.ipynb"
        atomic_write_text(sweep_dir / name, result["notebook"])
    atomic_write_text(sweep_dir / "records" / f"{slug}.json", json.dumps(row, indent=1))
    return row


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int):
    """A Dask client: on the running cluster at ``scheduler``, else on a new local
    cluster of ``workers`` processes with one task at a time each."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _dashboard(client) -> str | None:
    """The dashboard's address (Dask serves one only where bokeh is installed)."""
    return client.dashboard_link if importlib.util.find_spec("bokeh") else None


def parse_grid(grid_args) -> dict:
    grid = {}
    for name, values in grid_args:
        grid[name] = [parse_value(v) for v in values.split(",") if v.strip()]
        if not grid[name]:
            raise UsageError(f"{name}: empty list of values")
    return grid


def write_results(
    sweep_dir: Path, grid: dict, records: list[dict], metrics: list[str]
) -> Path:
    """``results.csv`` (one row per run) and ``results.png`` (metric vs parameter, mean
    and spread over seeds)."""
    names = list(grid)
    params = list(
        dict.fromkeys(names + [k for r in records for k in r["params"]])
    )  # grid, then the -p ones
    # a value the notebook glues under a parameter's own name (01 glues poison_rate) is
    # that parameter
    metric_names = sorted(
        {
            m
            for r in records
            for m, v in r["metrics"].items()
            if isinstance(v, (int, float)) and m not in params
        }
    )
    # where each run was computed (every chapter glues it): a cluster's workers may
    # differ
    setup = (
        ["computed_with"]
        if any("computed_with" in r["metrics"] for r in records)
        else []
    )
    fields = params + metric_names + ["status", "duration_s", "error"] + setup
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for r in records:
        writer.writerow(
            {
                **r["params"],
                **{m: r["metrics"].get(m, "") for m in metric_names},
                "status": r["status"],
                "duration_s": r["duration_s"],
                "error": r["error"],
                **{name: r["metrics"].get(name, "") for name in setup},
            }
        )
    csv_path = sweep_dir / "results.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    _plot(
        sweep_dir,
        names,
        records,
        [m for m in metrics if m in metric_names] or metric_names[:3],
    )
    return csv_path


def mixed_setups(records: list[dict]) -> str | None:
    """A warning when the finished runs were computed on more than one setup (machine,
    threads or training precision, as each chapter glues it in ``computed_with``), else
    None: the same seed gives slightly different numbers in fp32 and under bf16
    autocast, and with other thread counts.
    """
    setups = sorted(
        {
            r["metrics"]["computed_with"]
            for r in records
            if r["status"] == "ok" and "computed_with" in r["metrics"]
        }
    )
    if len(setups) < 2:
        return None
    listed = "; ".join(f"({i}) {text}" for i, text in enumerate(setups, 1))
    return (
        f"warning: these runs were computed on {len(setups)} different setups, so their"
        " numbers are not strictly comparable (the computed_with column says which run"
        f" ran where): {listed}"
    )


def _plot(
    sweep_dir: Path, names: list[str], records: list[dict], metrics: list[str]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    ok = [r for r in records if r["status"] == "ok"]
    x_name = next((n for n in names if n != "seed"), names[0])
    if not ok or not metrics:
        return
    frame = pd.DataFrame([{**r["params"], **r["metrics"]} for r in ok])
    if not pd.api.types.is_numeric_dtype(frame[x_name]):
        frame[x_name] = frame[x_name].astype(str)
    stats = frame.groupby(x_name)[metrics].agg(["mean", "min", "max"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m in metrics:
        ax.plot(stats.index, stats[(m, "mean")], marker="o", label=f"{m} (mean)")
        ax.fill_between(stats.index, stats[(m, "min")], stats[(m, "max")], alpha=0.2)
    ax.set(
        xlabel=x_name,
        ylabel="value (fraction)",
        title=f"{sweep_dir.name}: mean and min-max over other parameters",
    )
    if (
        pd.api.types.is_numeric_dtype(frame[x_name])
        and frame[x_name].min() > 0
        and frame[x_name].max() / frame[x_name].min() > 20
    ):
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(sweep_dir / "results.png", buffer.getvalue())


def cmd_sweep(args) -> int:
    notebook = Path(args.notebook)
    grid = parse_grid(args.grid)
    fixed = {name: parse_value(value) for name, value in args.param}
    points = [
        dict(fixed, **dict(zip(grid, combo)))
        for combo in itertools.product(*grid.values())
    ]
    for params in points:  # every grid point is checked before anything runs
        check_parameters(notebook, params)
    name = args.name or f"{notebook.stem}-{run_slug(grid)}"
    sweep_dir = Path(args.runs_dir) / name
    (sweep_dir / "records").mkdir(parents=True, exist_ok=True)
    # torch threads per run: the local cores shared among the local workers; on a remote
    # cluster the workers' own OMP_NUM_THREADS (start them with it set) decides
    threads = None if args.scheduler else threads_per_worker(args.workers)
    records, todo = {}, []
    for params in points:
        slug = run_slug(params)
        record = sweep_dir / "records" / f"{slug}.json"
        if record.exists():
            previous = json.loads(record.read_text())
            if previous["status"] == "ok":
                records[slug] = previous
                continue
        todo.append((slug, params))
    where = args.scheduler or f"a local Dask cluster of {args.workers} worker(s)"
    print(
        f"sweep {sweep_dir}: {len(points)} runs, {len(points) - len(todo)} already"
        f" done, {len(todo)} to run on {where}",
        file=sys.stderr,
    )
    if todo:
        from dask.distributed import as_completed
        from tqdm.auto import tqdm

        text = notebook.read_text()
        with dask_client(args.scheduler, args.workers) as client:
            link = _dashboard(client)
            if link:
                print(f"Dask dashboard: {link}", file=sys.stderr)
            futures = {
                client.submit(
                    _run_one,
                    notebook.name,
                    text,
                    p,
                    args.kernel,
                    threads,
                    key=f"run-{name}-{slug}",
                ): (slug, p)
                for slug, p in todo
            }
            failures = 0
            with tqdm(
                total=len(todo),
                desc="sweep",
                unit="run",
                disable=False,
                file=sys.stderr,
            ) as bar:
                for future in as_completed(futures):
                    slug, params = futures[future]
                    try:
                        result = future.result()
                    except (
                        Exception
                    ) as err:  # e.g. the task killed its workers too often: recorded
                        error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
                        result = {
                            "record": {
                                "params": params,
                                "status": "failed",
                                "error": error,
                                "metrics": {},
                                "duration_s": 0.0,
                            },
                            "notebook": None,
                        }
                    row = records[slug] = _save(sweep_dir, slug, result)
                    failures += row["status"] != "ok"
                    bar.set_postfix(failed=failures)
                    bar.update()
                    bar.write(
                        f"  {slug}: {row['status']} in {row['duration_s']} s"
                        f" {row['error']}"
                    )
    ordered = [records[run_slug(p)] for p in points]
    csv_path = write_results(
        sweep_dir, grid, ordered, HEADLINE_METRICS.get(notebook.stem, [])
    )
    print(csv_path.read_text())
    warning = mixed_setups(ordered)
    if warning:
        print(warning, file=sys.stderr)
    return 0 if all(r["status"] == "ok" for r in ordered) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backdoor_utils", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("run", "execute one notebook with parameters"),
        ("sweep", "execute a grid of parameters"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("notebook")
        p.add_argument(
            "-p",
            "--param",
            nargs=2,
            action="append",
            default=[],
            metavar=("NAME", "VALUE"),
        )
        p.add_argument("--runs-dir", default=str(RUNS))
        p.add_argument("--kernel", default="python3")
        if name == "sweep":
            p.add_argument(
                "-g",
                "--grid",
                nargs=2,
                action="append",
                required=True,
                metavar=("NAME", "V1,V2,..."),
            )
            p.add_argument(
                "--workers",
                type=int,
                default=1,
                help="local Dask worker processes (default 1)",
            )
            p.add_argument(
                "--scheduler",
                help=(
                    "address of a running Dask scheduler (tcp://HOST:PORT) to run the "
                    "grid on instead of a local cluster"
                ),
            )
            p.add_argument(
                "--name",
                help="sweep folder name under runs/ (default: derived from the grid)",
            )
    args = parser.parse_args(argv)
    if not Path(args.notebook).is_file():
        parser.error(f"notebook: {args.notebook} does not exist")
    try:
        return {"run": cmd_run, "sweep": cmd_sweep}[args.command](args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
