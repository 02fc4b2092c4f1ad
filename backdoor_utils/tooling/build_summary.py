"""Where a ``make book`` spent its time: each chapter's wall time, split into training
models, running defenses and detectors, and everything else; the entries it computed;
and the training's arithmetic floor at the rate of this hardware's matrix product.

It reads what the build already records: jupyter-cache's execution of each chapter (its
end and its seconds) and ``computed.log`` in the artifacts folder (a line for every
cache entry computed: when it finished, how long it took, its kind). An entry that ran
inside another (a reclassifier trained inside a matrix cell) counts once, in its own
kind, and is taken out of the outer entry's time.

``python -m backdoor_utils.tooling.build_summary --since EPOCH_SECONDS [--json PATH]
[--figure PATH]``; ``make book`` runs it last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core import cache
from ..core.cache import atomic_write_text
from ..core.data import TRAINING_SIZE
from ..core.training import resolve_device, training_precision
from .bench import matmul_rate, step_flops_per_image

ROOT = Path(__file__).resolve().parents[2]

#: What each cache folder's entries are, for the split of a chapter's time.
KINDS = {
    "models": "training",
    "attack_metrics": "other",
    "neural_cleanse": "defenses",
    "detections": "defenses",
    "screenings": "defenses",
    "matrix_cells": "defenses",
}
SHARES = ("training", "defenses", "other")
LABELS = {
    "training": "training models",
    "defenses": "defenses and detectors",
    "other": "everything else",
}


@dataclass
class Entry:
    """One line of ``computed.log``: a cache entry computed, its end and its seconds."""

    end: float  # epoch seconds
    seconds: float
    kind: str
    what: str
    own: float = 0.0  # seconds not spent in entries nested inside it

    @property
    def start(self) -> float:
        return self.end - self.seconds


@dataclass
class Chapter:
    """One chapter's execution in this build (``seconds`` None: taken from the
    cache)."""

    name: str
    end: float | None
    seconds: float | None
    shares: dict = field(default_factory=lambda: dict.fromkeys(SHARES, 0.0))
    computed: int = 0


def read_log(path: Path, since: float) -> list[Entry]:
    """The entries ``computed.log`` at ``path`` records as finished at or after
    ``since``, each with its own time (nested entries taken out)."""
    entries = []
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not parts[1].endswith(" s"):
            continue
        end = dt.datetime.strptime(parts[0], "%Y-%m-%d %H:%M:%S").timestamp()
        if end < since:
            continue
        kind = parts[2].split("/")[0]
        entries.append(Entry(end, float(parts[1][:-2]), kind, parts[3]))
    # the log's times are whole seconds: an entry nests inside another when it lies
    # within the other's span, give or take one second
    for outer in entries:
        inner = [
            e
            for e in entries
            if e is not outer
            and e.seconds < outer.seconds
            and e.start >= outer.start - 1
            and e.end <= outer.end + 1
        ]
        outer.own = max(0.0, outer.seconds - sum(e.seconds for e in _outermost(inner)))
    return entries


def _outermost(entries: list[Entry]) -> list[Entry]:
    """The entries not nested inside another one of ``entries``."""
    return [
        e
        for e in entries
        if not any(
            o is not e
            and o.seconds > e.seconds
            and e.start >= o.start - 1
            and e.end <= o.end + 1
            for o in entries
        )
    ]


def read_chapters(build: Path, since: float) -> list[Chapter]:
    """Every chapter of the book in the table of contents' order, with its execution in
    this build (None when jupyter-cache had it from an earlier build)."""
    from jupyter_cache import get_cache

    records = {}
    cache_dir = build / ".jupyter_cache"
    if cache_dir.exists():
        for record in get_cache(str(cache_dir)).list_cache_records():
            name = Path(record.uri).stem
            end = record.created.replace(tzinfo=dt.timezone.utc).timestamp()
            if end >= since and (name not in records or end > records[name][0]):
                records[name] = (end, record.data.get("execution_seconds"))
    toc = (ROOT / "_toc.yml").read_text()
    names = re.findall(r"notebooks/([\w-]+)", toc)
    return [Chapter(n, *records.get(n, (None, None))) for n in names]


def summarise(chapters: list[Chapter], entries: list[Entry]) -> dict:
    """Split each chapter's wall time into the shares of ``SHARES`` by the entries that
    ran inside it; the rest of its time is "other"."""
    for chapter in chapters:
        if chapter.seconds is None:
            continue
        start = chapter.end - chapter.seconds
        inside = [e for e in entries if e.end >= start - 1 and e.end <= chapter.end + 1]
        chapter.computed = len(inside)
        for entry in inside:
            chapter.shares[KINDS.get(entry.kind, "other")] += entry.own
        measured = chapter.shares["training"] + chapter.shares["defenses"]
        chapter.shares["other"] = max(0.0, chapter.seconds - measured)
    models = [e for e in entries if re.match(r"(attack|retrain) ", e.what)]
    images = sum(_images(e.what) for e in models)
    return {
        "chapters": [asdict(c) for c in chapters],
        "entries_computed": len(entries),
        "full_models": len(models),
        "images_trained": images,
    }


def _images(what: str) -> int:
    """Images a model entry trained on (epochs x its training set), from its
    description."""
    epochs = re.search(r"epochs (\d+)", what)
    n_train = re.search(r"n_train (\d+)", what)
    size = int(n_train.group(1)) if n_train else TRAINING_SIZE
    return (int(epochs.group(1)) if epochs else 0) * size


def arithmetic_floor(images: int, device: str = "auto") -> dict:
    """The training's arithmetic (``images`` forward and backward passes) and its time
    at the rate of a 4096 x 4096 matrix product in the training precision here."""
    dev = resolve_device(device)
    precision = training_precision(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rate = matmul_rate(dev, dtype)
    flops = images * step_flops_per_image()
    return {
        "tflop": flops / 1e12,
        "matmul_gflops": rate,
        "precision": precision,
        "floor_seconds": flops / rate / 1e9,
    }


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "cached"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def report(summary: dict, floor: dict | None) -> str:
    """The summary as the lines ``make book`` prints."""
    rows = [
        f"{'chapter':28s} {'wall time':>14s} {'training':>9s} {'defenses':>9s} "
        f"{'other':>9s} {'computed':>9s}"
    ]
    total = dict.fromkeys(SHARES, 0.0)
    wall = 0.0
    for c in summary["chapters"]:
        if c["seconds"] is None:
            rows.append(f"{c['name']:28s} {'not executed':>14s}")
            continue
        wall += c["seconds"]
        shares = [c["shares"][s] / c["seconds"] if c["seconds"] else 0 for s in SHARES]
        for s in SHARES:
            total[s] += c["shares"][s]
        rows.append(
            f"{c['name']:28s} {_minutes(c['seconds']):>14s} "
            + " ".join(f"{x:>9.0%}" for x in shares)
            + f" {c['computed']:>9d}"
        )
    if wall:
        rows.append(
            f"{'all chapters executed':28s} {_minutes(wall):>14s} "
            + " ".join(f"{total[s] / wall:>9.0%}" for s in SHARES)
            + f" {summary['entries_computed']:>9d}"
        )
    rows.append(
        f"cache entries computed in this build: {summary['entries_computed']} "
        f"({summary['full_models']} models trained from scratch)"
    )
    if floor is not None and summary["images_trained"]:
        rows.append(
            f"training's arithmetic floor: {summary['images_trained']:,} images "
            f"({floor['tflop']:.0f} TFLOP) take {_minutes(floor['floor_seconds'])} at "
            f"this hardware's {floor['precision']} matrix-product rate "
            f"({floor['matmul_gflops']:.0f} GFLOP/s; `make bench` measures the same)"
        )
    return "\n".join(rows)


def figure(summary: dict, path: Path) -> None:
    """Each chapter's wall time as a bar split into the shares, in minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chapters = [c for c in summary["chapters"] if c["seconds"]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    left = [0.0] * len(chapters)
    for share, colour in zip(SHARES, ("#4c72b0", "#dd8452", "#bbbbbb")):
        widths = [c["shares"][share] / 60 for c in chapters]
        ax.barh(
            [c["name"] for c in chapters],
            widths,
            left=left,
            color=colour,
            label=LABELS[share],
        )
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel("wall time (minutes)")
    ax.set_title("Where a build from nothing spends its time, chapter by chapter")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--since", type=float, required=True, help="the build's start (epoch seconds)"
    )
    parser.add_argument("--build", type=Path, default=ROOT / "_build")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--figure", type=Path, help="also draw the chapters' bars here")
    args = parser.parse_args(argv)
    entries = read_log(Path(cache.ARTIFACTS) / cache.LOG_NAME, args.since)
    summary = summarise(read_chapters(args.build, args.since), entries)
    floor = (
        arithmetic_floor(summary["images_trained"])
        if summary["images_trained"]
        else None
    )
    summary["floor"] = floor
    print(report(summary, floor))
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2))
    if args.figure:
        figure(summary, args.figure)
    return summary


if __name__ == "__main__":
    main()
