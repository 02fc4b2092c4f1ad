"""Reading the attack x defense matrix: which cells give a defender what it needs.

A defense can only be judged against a backdoor that is there. A run (attack, seed) whose attack
did not implant one - its ASR before any defense below ``min_asr`` - says nothing about the
defense: an input filter "lets through" triggered inputs the model classifies correctly anyway, and
a repair "leaves" the ASR the attack never had. :func:`judge_matrix` therefore summarises each
cell over the runs where the attack worked only, says over how many, and leaves out the attacks
that worked at no seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .evaluation import MATRIX_METRICS, display_name, matrix_summary, mean_sd_texts

#: What a defender needs from each defense's main metric: a detector that finds at least 90% of the
#: poisons (F1 or recall >= 0.9), an input filter that lets at most 5% of triggered inputs through
#: (FAR <= 0.05), a repair that leaves ASR <= 0.05.
DEFENDER_NEEDS = {
    "activation_clustering": 0.9,
    "spectral_signatures": 0.9,
    "strip": 0.05,
    "fine_pruning": 0.05,
    "neural_cleanse": 0.05,
}


def attack_runs(matrix: pd.DataFrame, min_asr: float) -> pd.DataFrame:
    """One row per (attack, seed) of the matrix: the model's CA and ASR before any defense, and
    whether the attack implanted a backdoor (ASR >= ``min_asr``)."""
    if not 0.0 < min_asr < 1.0:
        raise ValueError(f"min_asr: must be in (0, 1), got {min_asr}")
    runs = matrix.drop_duplicates(["attack", "seed"])[["attack", "seed", "clean_acc", "asr"]].reset_index(drop=True)
    runs["implanted"] = runs.asr >= min_asr
    return runs


def meets_need(defense: str, value: float, needs: dict = DEFENDER_NEEDS) -> bool:
    """Whether a cell's value is what a defender needs (the metric's direction from MATRIX_METRICS)."""
    higher_is_better = MATRIX_METRICS[defense][1]
    return bool(value >= needs[defense]) if higher_is_better else bool(value <= needs[defense])


@dataclass
class MatrixVerdict:
    """The matrix judged over the runs where the attack implanted a backdoor.

    ``mean``/``spread``/``score`` as :func:`evaluation.matrix_summary`, one row per attack of the
    matrix (NaN for an attack that worked at no seed); ``runs`` from :func:`attack_runs`;
    ``meets`` 1.0 where a judged cell meets the need, 0.0 where it does not, NaN where nothing
    was judged."""

    runs: pd.DataFrame
    mean: pd.DataFrame
    spread: pd.DataFrame
    score: pd.DataFrame
    meets: pd.DataFrame
    n_seeds: pd.Series  # per attack: the seeds at which it implanted a backdoor
    failing: list  # "attack vs defense (metric value)" for every judged cell below the need
    stopped: list  # attacks at least one defense stops
    unstopped: list  # attacks that worked and that no defense stops
    not_implanted: list  # attacks that implanted a backdoor at no seed

    @property
    def n_cells(self) -> int:
        return int(self.meets.notna().values.sum())

    @property
    def n_cells_ok(self) -> int:
        return int((self.meets == 1).values.sum())

    def cell_texts(self, blank: str = "-") -> pd.DataFrame:
        """Each cell as the reader sees it: "mean ± sd" over the seeds judged (a narrow table column
        breaks it only before the "±", never between "±" and the spread), the mean alone when one
        seed was judged (it has no spread), ``blank`` where nothing was judged."""
        texts = mean_sd_texts(self.mean, self.spread)
        one_seed = self.n_seeds.reindex(self.mean.index) == 1
        texts.loc[one_seed] = self.mean.loc[one_seed].map("{:.2f}".format)
        return texts.mask(self.mean.isna(), blank)

    def best_defense(self) -> tuple[str, int]:
        """The defense that meets the need against the most attacks, and against how many."""
        counts = (self.meets == 1).sum()
        return str(counts.idxmax()), int(counts.max())


def judge_matrix(matrix: pd.DataFrame, min_asr: float = 0.5, needs: dict = DEFENDER_NEEDS) -> MatrixVerdict:
    """Judge every cell of ``matrix`` (rows as :func:`evaluation.defense_matrix` returns them)
    over the seeds where its attack reached ASR >= ``min_asr`` before any defense."""
    runs = attack_runs(matrix, min_asr)
    attacks = list(dict.fromkeys(matrix.attack))
    worked = runs.loc[runs.implanted, ["attack", "seed"]]
    kept = matrix.merge(worked, on=["attack", "seed"])
    if len(kept):
        mean, spread, score = (frame.reindex(attacks) for frame in matrix_summary(kept))
    else:
        defenses = [d for d in MATRIX_METRICS if d in set(matrix.defense)]
        mean = spread = score = pd.DataFrame(float("nan"), index=attacks, columns=defenses)
    meets = pd.DataFrame({d: [float("nan") if v != v else float(meets_need(d, v, needs)) for v in mean[d]]
                          for d in mean.columns}, index=mean.index)
    n_seeds = runs.groupby("attack", sort=False).implanted.sum().reindex(attacks).astype(int)
    failing = [f"{a} vs {display_name(d)} ({MATRIX_METRICS[d][0]} {mean.loc[a, d]:.2f})"
               for a in attacks for d in mean.columns if meets.loc[a, d] == 0]
    not_implanted = [a for a in attacks if n_seeds[a] == 0]
    stopped = [a for a in attacks if (meets.loc[a] == 1).any()]
    unstopped = [a for a in attacks if a not in not_implanted and a not in stopped]
    return MatrixVerdict(runs, mean, spread, score, meets, n_seeds, failing, stopped, unstopped, not_implanted)
