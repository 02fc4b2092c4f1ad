"""The attack x defense matrix: built over attacks, seeds and defenses, summarised, and
read.

Building it runs every cell through :mod:`.defend` (cached there); reading it says which
cells give a defender what it needs. A defense can only be judged against a backdoor
that is there: a run (attack, seed) whose attack did not implant one - its ASR before
any defense below ``min_asr`` - says nothing about the defense (an input filter "lets
through" triggered inputs the model classifies correctly anyway, and a repair "leaves"
the ASR the attack never had). :func:`judge_matrix` therefore summarises each cell over
the runs where the attack worked only, says over how many, and leaves out the attacks
that worked at no seed. No cache is keyed on this module: a change here recomputes no
matrix cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import defenses, detectors
from ..core.column import Column
from ..defenses import defender_data
from .defend import defense_cell_cached
from .experiments import run_attack


def columns() -> dict[str, Column]:
    """The matrix's columns, declared by the methods themselves (their ``column``):
    every registered detector's, then every registered defense's, by name."""
    out = {}
    for registry in (detectors.REGISTRY, defenses.REGISTRY):
        out.update({n: c.column for n, c in registry.items() if c.column is not None})
    return out


def column(defense: str) -> Column:
    """The column of the detector or defense called ``defense``."""
    known = columns()
    if defense not in known:
        raise ValueError(
            f"defense: must be one of {', '.join(map(repr, known))}, got {defense!r}"
        )
    return known[defense]


def display_name(defense: str) -> str:
    """The defense's name on one line ("fine-\\npruning" -> "fine-pruning")."""
    return column(defense).name


def matrix_label(defense: str) -> str:
    """A matrix column's heading in a figure: the defense's name and, below it, its
    metric."""
    return column(defense).label


def table_heading(defense: str) -> str:
    """A matrix column's heading in a table: the defense's name, its metric in
    brackets."""
    return f"{column(defense).name} ({column(defense).metric})"


def of_kinds(defenses, cells: tuple | None = None) -> list:
    """The ``defenses`` whose column computes one of the kinds ``cells`` (e.g.
    :data:`DETECTOR_CELLS`), in their order; all of them when ``cells`` is None."""
    return [d for d in defenses if cells is None or column(d).cell in cells]


#: The attacks' names in the book's tables, with the chapter that introduces each; an
#: attack not listed here is shown by its registry name.
ATTACK_TITLES = {
    "patch": "pixel (01)",
    "noise": "noise (02)",
    "blur": "blur (03)",
    "learned": "learned patch (04)",
    "blended": "blended (07)",
    "sig": "SIG, clean-label (07)",
    "sig_ramp": "SIG with the authors' ramp (07)",
    "wanet": "WaNet (07)",
    "adaptive_blend": "Adaptive-Blend (09)",
}


def attack_title(attack: str) -> str:
    """The attack's name in a table: :data:`ATTACK_TITLES`, else its registry name."""
    return ATTACK_TITLES.get(attack, attack)


def mean_sd_texts(
    mean: pd.DataFrame, spread: pd.DataFrame, fmt: str = ".2f"
) -> pd.DataFrame:
    """Each cell of :func:`matrix_summary` as the reader sees it, "mean ± sd"; a
    no-break space after the "±", so a narrow table column breaks only before it, never
    between it and the spread.
    """
    show = f"{{:{fmt}}}".format
    return mean.map(show) + " ±\u00a0" + spread.map(show)


def matrix_runs(experiments: dict, runs, device: str = "auto", n_tune: int = 5000):
    """Every attack (``{name: Experiment}``) at every run - a ``(seed, target_label)``
    pair, each with its own seed - as ``(attack, seed, target, result, defender)``: the
    attack's model (cached) and the defender's clean data, as every study over the
    matrix's runs meets them, one attack's model at a time. Runs that share a seed fail
    before any training."""
    runs = [tuple(run) for run in runs]
    seeds = [seed for seed, _ in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(
            f"runs: each (seed, target_label) needs its own seed, got {runs}"
        )
    for attack, exp in experiments.items():
        for seed, target in runs:
            result = run_attack(exp.with_(seed=seed, target_label=target), device)
            yield attack, seed, target, result, defender_data(result.splits, n_tune)


def defense_matrix(
    experiments: dict,
    runs,
    methods: dict,
    device: str = "auto",
    n_tune: int = 5000,
    strip_inputs: int = 1000,
    priced: bool = True,
) -> pd.DataFrame:
    """Every attack (``{name: Experiment}``) at every run - a ``(seed, target_label)``
    pair, each with its own seed, so that no verdict rests on one target - against
    every defense (``{name: method}``, each with its :func:`column`): one row per
    (attack, run, defense), with the attack's own CA and ASR and, when ``priced``, what
    each defense that changes the model costs (:func:`.defend.price`). Models,
    reclassifiers, reversed triggers and the cells themselves are cached
    (:func:`defense_cell_cached`), so an interrupted run resumes and a rerun is cheap.
    """
    rows = []
    for attack, seed, target, result, defender in matrix_runs(
        experiments, runs, device, n_tune
    ):
        for name, method in methods.items():
            cell = defense_cell_cached(
                result,
                name,
                method,
                defender,
                n_tune,
                seed,
                device,
                strip_inputs,
                priced,
            )
            rows.append(
                {
                    "attack": attack,
                    "seed": seed,
                    "target": target,
                    "defense": name,
                    "metric": column(name).metric,
                    "clean_acc": result.clean_acc,
                    "asr": result.asr,
                    **cell,
                }
            )
    return pd.DataFrame(rows)


def matrix_summary(
    matrix: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per (attack, defense): the mean of ``value``, its sample standard deviation over
    seeds (0 for one seed), and the defender's score (the mean, or 1 - mean where lower
    is better).
    """
    grouped = matrix.groupby(["attack", "defense"], sort=False)["value"]
    mean = grouped.mean().unstack("defense")
    spread = grouped.std(ddof=1).fillna(0.0).unstack("defense")
    order = [d for d in columns() if d in mean.columns]
    attacks = list(dict.fromkeys(matrix.attack))
    mean, spread = mean.loc[attacks, order], spread.loc[attacks, order]
    score = mean.copy()
    for d in order:
        if not column(d).higher_is_better:
            score[d] = 1 - mean[d]
    return mean, spread, score


#: The most clean accuracy (percentage points of test CA) a defense that changes the
#: model may cost and still give the defender what it needs: a repair that removes the
#: backdoor with 4 points of accuracy is a different product. A detector's model is the
#: one retrained without what it flagged; STRIP does not change the model (its cost is
#: the clean inputs it rejects, set by its FRR).
MAX_CA_COST_PP = 1.0

#: The kinds of cell (:data:`~..core.column.CELL_KINDS`) of the methods that find
#: poisons or triggered inputs, and of those that give the defender a repaired model.
DETECTOR_CELLS = ("detection", "screening")
REPAIR_CELLS = ("repair", "reversal_repair", "training")


def attack_runs(matrix: pd.DataFrame, min_asr: float) -> pd.DataFrame:
    """One row per (attack, seed) of the matrix: the model's CA and ASR before any
    defense, and whether the attack implanted a backdoor (ASR >= ``min_asr``)."""
    if not 0.0 < min_asr < 1.0:
        raise ValueError(f"min_asr: must be in (0, 1), got {min_asr}")
    columns = ["attack", "seed", "target", "clean_acc", "asr"]
    runs = matrix.drop_duplicates(["attack", "seed"])[
        [c for c in columns if c in matrix]
    ].reset_index(drop=True)
    runs["implanted"] = runs.asr >= min_asr
    return runs


def meets_need(defense: str, value: float, needs: dict | None = None) -> bool:
    """Whether a cell's value is what a defender needs: at least (or at most, by the
    metric's direction) the column's ``need``, or ``needs[defense]`` when given."""
    return column(defense).meets(value, (needs or {}).get(defense))


def run_meets_need(
    defense: str, value: float, ca_cost_pp: float = float("nan"), needs=None
) -> bool:
    """Whether one run of a cell gives the defender what it needs: its metric meets the
    need (:func:`meets_need`) and, where the defense changed the model, it cost at most
    :data:`MAX_CA_COST_PP` points of clean accuracy."""
    priced = ca_cost_pp == ca_cost_pp  # NaN: the defense did not change the model
    return meets_need(defense, value, needs) and not (
        priced and ca_cost_pp > MAX_CA_COST_PP
    )


@dataclass
class MatrixVerdict:
    """The matrix judged over the runs where the attack implanted a backdoor.

    ``mean``/``spread``/``score`` as :func:`matrix_summary`, one row per attack of the
    matrix (NaN for an attack that worked at no seed); ``runs`` from
    :func:`attack_runs`; ``n_met`` per cell the seeds at which the run met the need,
    price included (:func:`run_meets_need`); ``meets`` 1.0 where a judged cell met it at
    every seed judged, 0.0 where not, NaN where nothing was judged; ``asr_after``,
    ``ca_cost`` and ``der`` the mean ASR after, CA cost (points) and DER of the
    defenses that change the model (NaN for the others)."""

    runs: pd.DataFrame
    mean: pd.DataFrame
    spread: pd.DataFrame
    score: pd.DataFrame
    meets: pd.DataFrame
    n_met: pd.DataFrame
    asr_after: pd.DataFrame
    ca_cost: pd.DataFrame
    der: pd.DataFrame
    n_seeds: pd.Series  # per attack: the seeds at which it implanted a backdoor
    failing: list  # "attack vs defense (metric value, seeds met)" for every judged cell
    # that does not meet the need at every seed
    stopped: list  # attacks at least one defense stops
    unstopped: list  # attacks that worked and that no defense stops
    not_implanted: list  # attacks that implanted a backdoor at no seed

    @property
    def n_cells(self) -> int:
        return int(self.meets.notna().values.sum())

    @property
    def n_cells_ok(self) -> int:
        return int((self.meets == 1).values.sum())

    def cell_texts(self, blank: str = "-", counts: str | None = None) -> pd.DataFrame:
        """Each cell as the reader sees it: "mean ± sd" over the seeds judged (a narrow
        table column breaks it only before the "±", never between "±" and the spread),
        the mean alone when one seed was judged (it has no spread), ``blank`` where
        nothing was judged; with ``counts`` (a separator), followed by the seeds that
        met the need, "k/n met"."""
        texts = mean_sd_texts(self.mean, self.spread)
        one_seed = self.n_seeds.reindex(self.mean.index) == 1
        texts.loc[one_seed] = self.mean.loc[one_seed].map("{:.2f}".format)
        if counts is not None:
            n = self.n_seeds.reindex(self.mean.index)
            met = self.n_met.fillna(0).astype(int).astype(str)
            texts = texts + counts + met.add("/").add(n.astype(str), axis=0) + " met"
        return texts.mask(self.mean.isna(), blank)

    def table(self, n_runs: int, cells: tuple | None = None) -> pd.DataFrame:
        """The matrix as chapter 08 and the results page show it: one row per attack
        (its :func:`attack_title`; the header above them says "attack"), the seeds of
        ``n_runs`` at which it implanted a backdoor, then one column per defense (its
        name and metric) with :meth:`cell_texts` and the seeds that met the need - every
        defense, or those whose column computes one of the kinds ``cells`` (e.g.
        :data:`DETECTOR_CELLS`), so that a page's column holds the table."""
        texts = self.cell_texts(blank="-", counts=" · ")
        texts = texts[of_kinds(texts.columns, cells)]
        table = texts.rename(columns=table_heading)
        seeds = self.n_seeds.reindex(texts.index).astype(str) + f"/{n_runs}"
        table.insert(0, "seeds with a backdoor", seeds)
        table.index = pd.Index([attack_title(a) for a in texts.index])
        table.columns.name = "attack"
        return table

    def best_defense(self) -> tuple[str, int]:
        """The defense that meets the need against the most attacks, and against how
        many."""
        counts = (self.meets == 1).sum()
        return str(counts.idxmax()), int(counts.max())


def judge_matrix(
    matrix: pd.DataFrame, min_asr: float = 0.5, needs: dict | None = None
) -> MatrixVerdict:
    """Judge every cell of ``matrix`` (rows as :func:`evaluation.defense_matrix` returns
    them) over the seeds where its attack reached ASR >= ``min_asr`` before any defense.
    """
    runs = attack_runs(matrix, min_asr)
    attacks = list(dict.fromkeys(matrix.attack))
    worked = runs.loc[runs.implanted, ["attack", "seed"]]
    kept = matrix.merge(worked, on=["attack", "seed"])
    if len(kept):
        mean, spread, score = (frame.reindex(attacks) for frame in matrix_summary(kept))
    else:
        present = [d for d in columns() if d in set(matrix.defense)]
        mean = spread = score = pd.DataFrame(
            float("nan"), index=attacks, columns=present
        )
    n_seeds = (
        runs.groupby("attack", sort=False).implanted.sum().reindex(attacks).astype(int)
    )
    cost = kept["ca_cost_pp"] if "ca_cost_pp" in kept else pd.Series(float("nan"))
    kept = kept.assign(
        met=[
            run_meets_need(d, v, c, needs)
            for d, v, c in zip(kept.defense, kept.value, cost.reindex(kept.index))
        ],
        ca_cost_pp=cost.reindex(kept.index),
        **{
            column: kept[column] if column in kept else float("nan")
            for column in ("der", "asr_after")
        },
    )
    cells = kept.groupby(["attack", "defense"], sort=False)

    def per_cell(column: str, how: str) -> pd.DataFrame:
        frame = cells[column].agg(how).unstack("defense") if len(kept) else None
        return pd.DataFrame(frame, index=attacks, columns=mean.columns, dtype=float)

    n_met = per_cell("met", "sum")
    asr_after, ca_cost, der = (
        per_cell(column, "mean") for column in ("asr_after", "ca_cost_pp", "der")
    )
    judged = mean.notna()
    meets = n_met.eq(n_seeds, axis=0).astype(float).where(judged)  # every judged seed
    failing = [
        f"{a} vs {display_name(d)} ({column(d).metric} {mean.loc[a, d]:.2f}, need"
        f" met at {int(n_met.loc[a, d])} of {n_seeds[a]} seeds)"
        for a in attacks
        for d in mean.columns
        if meets.loc[a, d] == 0
    ]
    not_implanted = [a for a in attacks if n_seeds[a] == 0]
    stopped = [a for a in attacks if (meets.loc[a] == 1).any()]
    unstopped = [a for a in attacks if a not in not_implanted and a not in stopped]
    return MatrixVerdict(
        runs,
        mean,
        spread,
        score,
        meets,
        n_met,
        asr_after,
        ca_cost,
        der,
        n_seeds,
        failing,
        stopped,
        unstopped,
        not_implanted,
    )


def repair_outcomes(matrix: pd.DataFrame, defense: str, min_asr: float = 0.5) -> dict:
    """Over the runs where the attack implanted a backdoor (ASR before >= ``min_asr``),
    how ``defense`` fared one run at a time: ``runs`` judged, ``metric_met`` where its
    metric meets the need, ``price_met`` where it cost at most :data:`MAX_CA_COST_PP`
    points of clean accuracy, ``both_met`` where both hold, and the smallest and
    largest cost (points) - what a mean over the cell hides."""
    worked = attack_runs(matrix, min_asr).query("implanted")[["attack", "seed"]]
    rows = matrix[matrix.defense == defense].merge(worked, on=["attack", "seed"])
    metric = [meets_need(defense, v) for v in rows.value]
    both = [run_meets_need(defense, v, c) for v, c in zip(rows.value, rows.ca_cost_pp)]
    return {
        "runs": len(rows),
        "metric_met": sum(metric),
        "price_met": int(rows.ca_cost_pp.le(MAX_CA_COST_PP).sum()),
        "both_met": sum(both),  # the verdict's own rule (:func:`run_meets_need`)
        "cost_min": float(rows.ca_cost_pp.min()),
        "cost_max": float(rows.ca_cost_pp.max()),
    }


def isolation_rows(matrix: pd.DataFrame, defense: str = "abl") -> pd.DataFrame:
    """A training-time defense's isolation at every run of ``matrix``: the attack, seed
    and target, the ASR before, the precision and recall of the images it set apart
    against the true poison flags, and the ASR and clean-accuracy cost after."""
    rows = matrix[matrix.defense == defense]
    names = {
        "attack": "attack",
        "seed": "seed",
        "target": "target",
        "asr": "ASR before",
        "isolated_precision": "isolation precision",
        "isolated_recall": "isolation recall",
        "asr_after": "ASR after",
        "ca_cost_pp": "CA cost (points)",
    }
    return rows[list(names)].rename(columns=names).reset_index(drop=True)


def runs_table(matrix: pd.DataFrame, cells: tuple | None = None) -> pd.DataFrame:
    """Every run of ``matrix`` as computed, judged or not: one row per (attack, seed),
    its ASR before any defense, then each defense's metric (every defense, or those
    whose column computes one of the kinds ``cells``), named as :meth:`table` names
    them."""
    chosen = of_kinds([d for d in columns() if d in set(matrix.defense)], cells)
    keys = ["attack", "seed"]
    values = matrix.pivot(index=keys, columns="defense", values="value")[chosen]
    values = values.rename(columns=table_heading)
    before = matrix.groupby(keys, sort=False).asr.first().rename("ASR before")
    return pd.concat([before, values], axis=1).loc[before.index]
