"""Studies over many runs: detectors and defenses over seeds and targets, where the true
poisons went and why a detector missed, the stealth / poison grid, learned against fixed
triggers, and what the latent space shows - each summarised for the reader.

Built on :mod:`.defend` (one attack result against one method, scored and cached). No
cache is keyed on this module: a change here retrains no model and recomputes no
detection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, silhouette_score

from ..defenses import NeuralCleanse
from ..defenses.neural_cleanse import cleanse_report
from ..attacks.learned import pixel_change
from ..detectors import Detector
from ..detectors.activation_clustering import Detection
from ..detectors.confusion_training import (
    N_CLASSES,
    ConfusionResult,
    ConfusionTraining,
)
from ..detectors.spectral_signatures import (
    LAYERS,
    SCORINGS,
    SpectralSignatures,
    direction_scores,
)
from .experiments import (
    AttackResult,
    Experiment,
    cleanse,
    reversed_triggers,
    run_attack,
    sweep,
    tensor_digest,
    train_cached,
    train_on_data_cached,
)
from ..core.metrics import attack_success_rate, distortion
from .defend import detect_and_score, detect_cached, training_set
from .matrix import matrix_runs
from ..core.training import activations


def where_the_poisons_went(found: Detection, truth: torch.Tensor) -> dict:
    """For the reader, from the true flags: the candidate cluster holding the most
    poisons - how many it holds, its size, the reclassifier's l and p for it and its
    verdict - and how the label the poisons carry was split: its k, and per cluster
    (largest first) the size, the poisons it holds and whether it was a candidate."""
    truth = truth.numpy()
    held, row = 0, None
    for candidate, idx in zip(
        found.reclassification.table, found.reclassification.members
    ):
        if truth[idx].sum() > held:
            held, row = int(truth[idx].sum()), candidate
    went = {
        "n_poison_total": int(truth.sum()),
        "poisons_in_best_candidate": held,
        "best_candidate_size": row["size"] if row else 0,
        "best_candidate_l": row["l"] if row else 0,
        "best_candidate_p": row["p"] if row else 0,
        "best_candidate_flagged": bool(row and row["flagged"]),
        "poison_label": None,
        "poison_label_k": 0,
        "poison_label_silhouette": float("nan"),
        "poison_label_sizes": (),
        "poison_label_held": (),
        "poison_label_candidates": (),
    }
    if not truth.any() or not found.clusterings:
        return went
    label = max(found.clusterings, key=lambda c: truth[c.index].sum())
    members = {(len(m), int(m[0])) for m in found.reclassification.members if len(m)}
    clusters = [label.index[label.assignments == i] for i in range(label.k)]
    clusters.sort(key=len, reverse=True)
    return {
        **went,
        "poison_label": label.label,
        "poison_label_k": label.k,
        "poison_label_silhouette": label.silhouette,
        "poison_label_sizes": tuple(len(c) for c in clusters),
        "poison_label_held": tuple(int(truth[c].sum()) for c in clusters),
        "poison_label_candidates": tuple(
            len(c) > 0 and (len(c), int(c[0])) in members for c in clusters
        ),
    }


def _listed(items) -> str:
    """``[3274, 2809]`` as "3,274 and 2,809"."""
    items = [f"{i:,}" if isinstance(i, int) else str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _split_reason(run: dict, size_threshold: float, min_silhouette: float) -> str:
    """Why no candidate cluster holds most poisons: how the poisons' label was split."""
    n, k = run["n_poison_total"], run["poison_label_k"]
    if not k:  # no clustering of the poisons' label to describe
        return (
            f"no candidate cluster holds even half of the {n} poisons (the best holds"
            f" {run['poisons_in_best_candidate']})"
        )
    if k == 1:
        return (
            "the target label stays one cluster: its best split scores silhouette"
            f" {run['poison_label_silhouette']:.3f}, below min_silhouette"
            f" {min_silhouette:g}, so it has no candidate cluster"
        )
    sizes, held, candidate = (
        run["poison_label_sizes"],
        run["poison_label_held"],
        run["poison_label_candidates"],
    )
    reason = (
        f"the silhouette splits the target label into {k} clusters of {_listed(sizes)}"
        f" images, holding {_listed(held)} of the {n} poisons; "
    )
    rule = (
        f"a candidate holds at most {size_threshold:g} of its label and is not its"
        " largest cluster"
    )
    if not any(candidate):
        return reason + f"{'neither' if k == 2 else 'none'} is a candidate ({rule})"
    in_candidates = sum(h for h, c in zip(held, candidate) if c)
    return reason + f"the candidates ({rule}) hold only {in_candidates} of them"


def failure_reason(
    run: dict,
    ratio_threshold: float = 1.0,
    size_threshold: float = 0.35,
    min_silhouette: float = 0.10,
) -> str:
    """Why a detection run missed, in one clause, from its
    :func:`where_the_poisons_went` and scores ("" when it found at least 90% F1); the
    thresholds are the detector's, for the text.
    """
    if run["f1"] >= 0.9:
        return ""
    n, held = run["n_poison_total"], run["poisons_in_best_candidate"]
    if held < n / 2:
        reason = _split_reason(run, size_threshold, min_silhouette)
    elif not run["best_candidate_flagged"]:
        l, p, size = (  # noqa: E741 (l and p as Chen et al. name them)
            run["best_candidate_l"],
            run["best_candidate_p"],
            run["best_candidate_size"],
        )
        if held >= size / 2:  # the poisons' own cluster
            reason = (
                f"{held} of the {n} poisons form a cluster of {size:,}, but the"
                f" reclassifier - trained with the other {n - held} poisons still in -"
                f" calls {l:,} of them the target"
            )
        else:
            reason = (
                f"{held} of the {n} poisons fall in a cluster of {size:,} images that"
                f" are mostly genuine digits, and the reclassifier calls {l:,} of them"
                " the target"
            )
        reason += (
            f" against {p:,} for the most common other class, so l / p ="
            f" {l / max(p, 1):.2f} > T = {ratio_threshold:g} keeps the cluster"
        )
    else:
        reason = (
            f"the poisons' cluster is caught, but it holds only {held} of the {n}"
            " poisons"
        )
    false_alarms = run["n_flagged"] - round(run["recall"] * n)
    if false_alarms > 0:
        reason += f"; {false_alarms:,} genuine images are flagged"
    return reason


def detection_row(
    result: AttackResult, detector: Detector, seed: int = 0, device: str = "auto"
) -> dict:
    """``detector`` on ``result``'s training set: its scores against the true flags,
    where the poisons went and, below F1 0.9, why it missed (:func:`failure_reason`; ""
    for a clean model).
    """
    found, scores = detect_cached(result, detector, seed=seed, device=device)
    row = {**scores, **where_the_poisons_went(found, training_set(result)[2])}
    thresholds = {
        name: getattr(detector, name)
        for name in ("ratio_threshold", "size_threshold", "min_silhouette")
        if hasattr(detector, name)
    }
    return {
        **row,
        "why_missed": (
            failure_reason(row, **thresholds) if row["n_poison_total"] else ""
        ),
    }


def detection_over_runs(
    exp: Experiment, runs, detector: Detector, device: str = "auto"
) -> pd.DataFrame:
    """``detector`` on the attack ``exp`` for every ``(seed, target_label)`` in ``runs``
    (each its own poisoned training set and model, cached): one :func:`detection_row`
    per run."""
    rows = []
    for seed, target in runs:
        result = run_attack(exp.with_(seed=seed, target_label=target), device)
        rows.append(
            {
                "seed": seed,
                "target_label": target,
                "asr": result.asr,
                **detection_row(result, detector, seed, device),
            }
        )
    return pd.DataFrame(rows)


def cleanse_over_runs(
    exp: Experiment,
    runs,
    x_clean: torch.Tensor,
    defense: NeuralCleanse,
    device: str = "auto",
) -> pd.DataFrame:
    """Neural Cleanse (``defense``, its reversed triggers cached) on the attack ``exp``
    for every ``(seed, target_label)`` in ``runs``, each its own model, with the same
    clean images: one row per run - the flagged classes, whether the target is one of
    them, the target's anomaly index, the largest index among the other classes and how
    many classes never reached the target rate.
    """
    rows = []
    for seed, target in runs:
        result = run_attack(exp.with_(seed=seed, target_label=target), device)
        report = cleanse(result, defense, x_clean)
        row = _index_row(report, target)
        rows.append(
            {
                "seed": seed,
                "target": target,
                "asr": result.asr,
                "flagged": row["flagged"],
                "target_flagged": target in report.flagged,
                **{k: row[k] for k in ("target_index", "max_other_index", "unreached")},
            }
        )
    return pd.DataFrame(rows)


def _index_row(report, target: int | None, threshold: float = np.inf) -> dict:
    """What a Neural Cleanse ``report`` says of one model, as table columns: the flagged
    classes as text, the ``target``'s anomaly index, the largest index among the other
    classes, how many of those exceed ``threshold`` and how many classes never reached
    the target rate; ``target`` None for a clean model (every class is "other")."""
    index = report.anomaly_index
    others = index if target is None else np.delete(index, target)
    return {
        "flagged": ", ".join(map(str, report.flagged)) or "none",
        "target_index": np.nan if target is None else float(index[target]),
        "max_other_index": (
            float(np.nanmax(others)) if np.isfinite(others).any() else np.nan
        ),
        "false_flags": int((others > threshold).sum()),
        "unreached": len(report.unreached),
    }


def cleanse_budgets(
    exp: Experiment,
    runs,
    x_clean: torch.Tensor,
    budgets: dict,
    device: str = "auto",
) -> pd.DataFrame:
    """Neural Cleanse at each of ``budgets`` (name -> :class:`NeuralCleanse`) on the
    attack ``exp`` and on the clean model of every ``(seed, target_label)`` in ``runs``:
    one row per budget, run and model - the flagged classes, the target's anomaly index
    (backdoored models), the largest index of any other class (every class on a clean
    model), the classes that never reached the target rate, the most steps a class ran
    and the seconds the reversal took when it was computed."""
    rows = []
    for name, defense in budgets.items():
        options = defense.options()
        for seed, target in runs:
            attacked = exp.with_(seed=seed, target_label=target)
            for model, result in (
                ("backdoored", run_attack(attacked, device)),
                ("clean", run_attack(attacked.clean(), device)),
            ):
                triggers, seconds = reversed_triggers(
                    result, x_clean, with_seconds=True, **options
                )
                report = cleanse_report(triggers, defense.anomaly_threshold)
                backdoored = model == "backdoored"
                row = _index_row(
                    report, target if backdoored else None, defense.anomaly_threshold
                )
                rows.append(
                    {
                        "budget": name,
                        "seed": seed,
                        "target": target,
                        "model": model,
                        "flagged": row.pop("flagged"),
                        "target_flagged": backdoored and target in report.flagged,
                        **row,
                        "steps_run": max(t.steps_run for t in triggers),
                        "seconds": seconds,
                    }
                )
    return pd.DataFrame(rows)


def budget_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per budget of a :func:`cleanse_budgets` table: on how many backdoored models the
    target is flagged, how many classes are flagged wrongly (on backdoored and clean
    models together), the mean seconds a model, and each run's verdict - "target" or
    "missed", "+k false" - as text; budgets agree when their verdict texts do."""
    rows = []
    for name, part in table.groupby("budget", sort=False):
        backdoored = part[part.model == "backdoored"]
        verdicts = []
        for (seed, target), run in part.groupby(["seed", "target"], sort=False):
            hit = bool(run.target_flagged.any())
            false = int(run.false_flags.sum())
            verdicts.append(
                f"seed {seed}: {'target' if hit else 'missed'}"
                + (f" +{false} false" if false else "")
            )
        rows.append(
            {
                "budget": name,
                "target flagged": f"{int(backdoored.target_flagged.sum())} of"
                f" {len(backdoored)}",
                "false flags": int(part.false_flags.sum()),
                "seconds a model": float(part.seconds.mean()),
                "verdicts": "; ".join(verdicts),
            }
        )
    return pd.DataFrame(rows)


def retrain_relabelled(
    result: AttackResult, labels: torch.Tensor, device: str = "auto"
):
    """Retrain from scratch, with ``result``'s recipe, on its training images under
    ``labels`` (e.g. :meth:`Reclassification.relabelled
    <backdoor_utils.detectors.activation_clustering.Reclassification.relabelled>`):
    Chen et al.'s repair that keeps the flagged images but gives them their source
    class. Cached under a hash of the images and ``labels`` with the recipe, which is
    all that decides the model."""
    x, _, _ = training_set(result)
    return train_on_data_cached(
        x, labels, result.experiment.train_config(), device, desc="relabelled"
    )


def mean_and_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def trade_off_grid(
    exp: Experiment,
    field: str,
    values,
    poison_rates,
    x_test: torch.Tensor,
    device: str = "auto",
    seeds=None,
) -> pd.DataFrame:
    """One model per (``field`` value, poison rate, seed) (cached; ``seeds`` default to
    ``exp``'s own): a row each with the value, the poison rate, the seed, the number of
    poisons, the triggered test images' median PSNR, CA and ASR.
    """
    rows = []
    for value in values:
        for rate in poison_rates:
            for seed in [exp.seed] if seeds is None else seeds:
                cell = exp.with_(**{field: value}, poison_rate=rate, seed=seed)
                result = run_attack(cell, device)
                triggered = result.trigger.apply(x_test)
                psnr = float(distortion(x_test, triggered)["psnr_db"].median())
                rows.append(
                    {
                        field: value,
                        "poison_rate": rate,
                        "seed": seed,
                        "n_poison": result.poisoned.n_poison,
                        "psnr_db_median": psnr,
                        "clean_acc": result.clean_acc,
                        "asr": result.asr,
                    }
                )
    return pd.DataFrame(rows)


def worst_over_seeds(grid: pd.DataFrame, field: str) -> pd.DataFrame:
    """One row per (``field`` value, poison rate) of a :func:`trade_off_grid` trained
    at several seeds: what holds at *every* seed - the lowest ASR and CA and the lowest
    median PSNR over the seeds - with the number of seeds and each seed's ASR. A setting
    chosen from this map implants at every seed it was trained with, not at the one
    that happened to be measured."""
    cells = grid.groupby([field, "poison_rate"], sort=False)
    return cells.agg(
        n_poison=("n_poison", "max"),
        psnr_db_median=("psnr_db_median", "min"),
        clean_acc=("clean_acc", "min"),
        asr=("asr", "min"),
        n_seeds=("seed", "nunique"),
        asr_by_seed=("asr", lambda a: ", ".join(f"{v:.2f}" for v in a)),
    ).reset_index()


#: SIG's map (chapter 07; the matrix of chapter 08 takes its setting from it): training
#: signals from the book's first 20/255 to backdoor-toolbox's 30/255 and BackdoorBench's
#: 40/255, shares of the target class, and a test signal this many times stronger.
SIG_DELTAS = (20 / 255, 30 / 255, 40 / 255)
SIG_SHARES = (0.1, 0.2, 0.4)
SIG_TEST_FACTOR = 2.0


def signal_map(
    exp: Experiment,
    runs,
    deltas=SIG_DELTAS,
    shares=SIG_SHARES,
    test_factor: float = SIG_TEST_FACTOR,
    device: str = "auto",
) -> pd.DataFrame:
    """SIG's delta x share map: one model per (training delta, share of the target
    class, run) - ``runs`` are (seed, target label) pairs - tested with the training
    signal and with one ``test_factor`` times stronger (the same model: the test signal
    does not change training). A row per model and test signal: the number of poisons,
    the test signal's median PSNR, CA, ASR, and the clean model's rate of sending the
    same triggered images to the target (the control: a signal strong enough to fool any
    model is no backdoor)."""
    rows = []
    for seed, target in runs:
        clean = run_attack(exp.clean().with_(seed=seed, target_label=target), device)
        x, y = clean.splits.x_test, clean.splits.y_test
        for delta in deltas:
            for share in shares:
                for test_delta in (delta, test_factor * delta):
                    cell = exp.with_(
                        sig_delta=delta,
                        sig_test_delta=None if test_delta == delta else test_delta,
                        poison_rate=share,
                        seed=seed,
                        target_label=target,
                    )
                    result = run_attack(cell, device)
                    trigger = result.trigger
                    rows.append(
                        {
                            "sig_delta": delta,
                            "share": share,
                            "test_delta": test_delta,
                            "seed": seed,
                            "target": target,
                            "n_poison": result.poisoned.n_poison,
                            "psnr_db_median": float(
                                distortion(x, trigger.apply(x))["psnr_db"].median()
                            ),
                            "clean_acc": result.clean_acc,
                            "asr": result.asr,
                            "clean_model": attack_success_rate(
                                clean.model, x, y, trigger, target
                            ),
                        }
                    )
    return pd.DataFrame(rows)


def signal_map_over_runs(grid: pd.DataFrame) -> pd.DataFrame:
    """One row per (training delta, share, test delta) of a :func:`signal_map`: what
    holds at every run - the lowest ASR and CA, the highest clean-model control and the
    most poisons - with each run's ASR."""
    keys = ["sig_delta", "share", "test_delta"]
    return (
        grid.groupby(keys, sort=False)
        .agg(
            n_poison=("n_poison", "max"),
            psnr_db_median=("psnr_db_median", "min"),
            clean_acc=("clean_acc", "min"),
            asr=pd.NamedAgg("asr", "min"),
            clean_model=("clean_model", "max"),
            n_runs=("seed", "size"),
            asr_by_run=("asr", lambda a: ", ".join(f"{v:.2f}" for v in a)),
        )
        .reset_index()
    )


@dataclass(frozen=True)
class SignalPick:
    """SIG's setting for the matrix: the cheapest row of
    :func:`signal_map_over_runs` that implants at every run, or (``implants`` False)
    the row with the highest lowest ASR when none does."""

    row: dict
    implants: bool
    min_asr: float

    @property
    def params(self) -> dict:
        """The experiment fields of the setting (``poison_rate`` is the share of the
        target class)."""
        delta, test_delta = self.row["sig_delta"], self.row["test_delta"]
        return {
            "sig_delta": delta,
            "sig_test_delta": None if np.isclose(test_delta, delta) else test_delta,
            "poison_rate": self.row["share"],
        }

    @property
    def text(self) -> str:
        r = self.row
        setting = (
            f"training signal {255 * r['sig_delta']:.0f}/255 on"
            f" {100 * r['share']:.0f}% of the target class"
            f" ({int(r['n_poison']):,} images at most), tested with"
            f" {255 * r['test_delta']:.0f}/255"
        )
        if self.implants:
            return (
                f"{setting}: ASR at least {r['asr']:.4f} at every run (runs:"
                f" {r['asr_by_run']}; the clean model at most {r['clean_model']:.4f})"
            )
        return (
            f"none implants at every run (ASR >= {self.min_asr:.2f}); the closest is "
            f"{setting}, whose lowest ASR is {r['asr']:.4f} (runs: {r['asr_by_run']})"
        )


def cheapest_signal(summary: pd.DataFrame, min_asr: float) -> SignalPick:
    """The row of ``summary`` (:func:`signal_map_over_runs`) with the fewest poisons,
    then the weakest training signal, then the weakest test signal, whose lowest ASR
    over the runs is at least ``min_asr``."""
    order = ["n_poison", "sig_delta", "test_delta"]
    good = summary[summary.asr >= min_asr].sort_values(order)
    if len(good):
        return SignalPick(good.iloc[0].to_dict(), True, min_asr)
    best = summary.sort_values(["asr"] + order, ascending=[False, True, True, True])
    return SignalPick(best.iloc[0].to_dict(), False, min_asr)


def learned_vs_fixed(exp: Experiment, scales, poison_rates, device: str = "auto"):
    """Chapter 04's comparison: the learned patch of ``exp`` trained with each step size
    in ``scales`` (``trigger_lr_scale``) at each poison rate, against the same patch
    frozen at its start (``initial_patch``). Returns ``(runs, tables, fixed)``: per step
    size its results and a table (one row per rate) with the frozen patch's ASR beside,
    the gain and how far training moved the patch
    (:func:`~backdoor_utils.attacks.learned.pixel_change`); and the frozen patch's
    table.
    """
    _, fixed = sweep(
        exp.with_(attack="initial_patch"), "poison_rate", poison_rates, device
    )
    start = exp.trigger().frozen()  # every run starts from this patch
    runs, tables = {}, {}
    for scale in scales:
        runs[scale], table = sweep(
            exp.with_(trigger_lr_scale=scale), "poison_rate", poison_rates, device
        )
        table["trigger_lr_scale"] = scale
        table["ASR fixed initial"] = fixed.asr.values
        table["gain"] = table.asr - table["ASR fixed initial"]
        table["largest change of a patch pixel"] = [
            pixel_change(r.trigger, start) for r in runs[scale]
        ]
        tables[scale] = table
    return runs, tables, fixed


@dataclass(frozen=True)
class Pick:
    """The cheapest cell of a :func:`trade_off_grid` meeting a stealth and a success
    floor."""

    field: str
    row: dict | None  # None: no cell meets both floors
    closest: (
        dict | None
    )  # when none does: the stealthy-enough cell with the highest ASR
    scale: float
    unit: str

    def _setting(self, row) -> str:
        return (
            f"{self.field} {row[self.field] * self.scale:g}{self.unit} (median PSNR"
            f" {row['psnr_db_median']:.1f} dB) at poison rate {row['poison_rate']:g}"
            f" ({int(row['n_poison']):,} poisoned images)"
        )

    @property
    def text(self) -> str:
        if self.row is not None:
            return (
                f"{self._setting(self.row)}: ASR {self.row['asr']:.4f}, CA"
                f" {self.row['clean_acc']:.4f}"
            )
        if self.closest is None:
            return "none in the grid: no setting is stealthy enough"
        return (
            f"none in the grid: the closest is {self._setting(self.closest)} with ASR "
            f"{self.closest['asr']:.4f}"
        )

    def compare(self, value: float, poison_rate: float) -> str:
        """A sentence on whether the chapter's own setting is the pick."""
        if self.row is None:
            return (
                "No setting of the grid meets both floors, so the chapter keeps its"
                " default."
            )
        if np.isclose(self.row[self.field], value) and np.isclose(
            self.row["poison_rate"], poison_rate
        ):
            return "It is this chapter's default setting."
        return (
            f"The chapter's default ({self.field} {value * self.scale:g}{self.unit},"
            f" poison rate {poison_rate:g}) is not that setting."
        )


def cheapest_setting(
    grid: pd.DataFrame,
    field: str,
    min_psnr_db: float,
    min_asr: float,
    scale: float = 1.0,
    unit: str = "",
) -> Pick:
    """The cell with the fewest poisons among those with PSNR >= ``min_psnr_db`` and ASR
    >= ``min_asr`` (ties: the higher PSNR). ``scale``/``unit`` only format ``field`` for
    the reader.
    """
    stealthy = grid[grid.psnr_db_median >= min_psnr_db]
    good = stealthy[stealthy.asr >= min_asr].sort_values(
        ["n_poison", "psnr_db_median"], ascending=[True, False]
    )
    if len(good):
        return Pick(field, good.iloc[0].to_dict(), None, scale, unit)
    closest = (
        stealthy.sort_values("asr", ascending=False).iloc[0].to_dict()
        if len(stealthy)
        else None
    )
    return Pick(field, None, closest, scale, unit)


def latent_separation(result: AttackResult, n_components: int = 10) -> dict:
    """For the reader, from the true flags: how far the poisons sit from the genuine
    images of the target label in the model's penultimate space - the images labelled
    target projected with PCA, the first two components for a picture, and the
    silhouette of the split genuine / poisoned (near 1: a cluster of their own; near 0
    or below: mixed in)."""
    x, y, truth = training_set(result)
    index = torch.nonzero(y == result.experiment.target_label).flatten()
    reps = activations(result.model, x[index]).numpy()
    projected = PCA(n_components, random_state=0).fit_transform(reps)
    poison = truth[index].numpy()
    score = (
        float(
            silhouette_score(
                projected, poison, sample_size=min(len(poison), 4000), random_state=0
            )
        )
        if 0 < poison.sum() < len(poison)
        else float("nan")
    )
    return {"points": projected[:, :2], "is_poison": poison, "silhouette": score}


def _removal_scores(poison: np.ndarray, score: np.ndarray, epsilon: float) -> dict:
    """How well ``score`` separates the poisons of one label (AUROC) and the recall of
    removing its top ``1.5 * epsilon`` share by it."""
    n_remove = int(np.floor(1.5 * epsilon * len(score)))
    top = np.argsort(-score, kind="stable")[:n_remove]
    separable = 0 < poison.sum() < len(poison)
    return {
        "AUROC poisoned vs genuine": (
            float(roc_auc_score(poison, score)) if separable else float("nan")
        ),
        "recall of the removal": float(poison[top].sum() / max(1, poison.sum())),
    }


def _target_label(result: AttackResult) -> tuple[torch.Tensor, np.ndarray]:
    """The training images that carry the target label, and their true poison flags."""
    x, y, truth = training_set(result)
    index = torch.nonzero(y == result.experiment.target_label).flatten()
    return x[index], truth[index].numpy()


def _cached_table(spec: dict, compute, code, device: str = "auto") -> pd.DataFrame:
    """A study's table computed once per model and setting: ``compute()``'s rows are
    cached (kind "studies") under ``spec``, keyed on ``code`` - the singular value
    decompositions behind these tables take minutes at full scale, and a chapter that
    re-executes should not pay them again."""
    rows, _ = train_cached(
        spec,
        lambda: compute().to_dict("records"),
        kind="studies",
        code=code,
        device=device,
    )
    return pd.DataFrame(rows)


def singular_directions(
    result: AttackResult, detector: SpectralSignatures, n_directions: int = 5
) -> pd.DataFrame:
    """For the reader, from the true flags: Spectral Signatures' score (at the
    detector's layer, with its scoring) along each of the first ``n_directions``
    right-singular vectors of the target label's centred representations - its singular
    value, the AUROC of the score for poisoned vs genuine, and the recall of removing
    the top ``1.5 * epsilon`` of the label by it. The method uses only the first
    direction; this shows whether the poisons sit along it or along another. Cached
    (:func:`_cached_table`).
    """
    spec = {
        "kind": "singular_directions",
        "model": result.key,
        "detector_params": asdict(detector),
        "n_directions": n_directions,
    }
    return _cached_table(
        spec,
        lambda: _singular_directions(result, detector, n_directions),
        (_singular_directions, type(detector)),
    )


def _singular_directions(result, detector, n_directions) -> pd.DataFrame:
    x, poison = _target_label(result)
    reps = activations(result.model, x, layer=detector.layer)
    scores, values = direction_scores(reps, n_directions, detector.scoring)
    return pd.DataFrame(
        [
            {
                "direction": k + 1,
                "singular value": float(values[k]),
                **_removal_scores(poison, scores[:, k].numpy(), detector.epsilon),
            }
            for k in range(len(values))
        ]
    )


def spectral_variants(
    result: AttackResult, epsilon: float, layers=LAYERS, scorings=SCORINGS
) -> pd.DataFrame:
    """For the reader, from the true flags: Spectral Signatures on the target label at
    every ``layer`` with every ``scoring`` (top singular direction, the top ``1.5 *
    epsilon`` removed) - the representations' size, the AUROC of the score for
    poisoned vs genuine and the recall of the removal. Which choice decides what the
    method finds: the layer, the scoring, or both. Cached (:func:`_cached_table`).
    """
    spec = {
        "kind": "spectral_variants",
        "model": result.key,
        "epsilon": epsilon,
        "layers": list(layers),
        "scorings": list(scorings),
    }
    return _cached_table(
        spec,
        lambda: _spectral_variants(result, epsilon, layers, scorings),
        (_spectral_variants,),
    )


def _spectral_variants(result, epsilon, layers, scorings) -> pd.DataFrame:
    x, poison = _target_label(result)
    rows = []
    for layer in layers:
        reps = activations(result.model, x, layer=layer)
        for scoring in scorings:
            score = direction_scores(reps, 1, scoring)[0][:, 0].numpy()
            rows.append(
                {
                    "layer": layer,
                    "dimensions": int(reps[0].numel()),
                    "scoring": scoring,
                    **_removal_scores(poison, score, epsilon),
                }
            )
    return pd.DataFrame(rows)


def confusion_labels_table(
    found: ConfusionResult, y: torch.Tensor, truth: torch.Tensor
) -> pd.DataFrame:
    """For the reader, from the true flags: Confusion Training's result label by label -
    the images carrying the label and the poisons among them, how many of each the last
    distilled set kept, how many the confused model still fits (its *isolated* images,
    flagged only when the label is cleansed), the label's likelihood ratio and whether
    the final test cleansed it."""
    kept = torch.zeros(len(y), dtype=torch.bool)
    kept[found.distilled] = True
    rows = []
    for label in range(N_CLASSES):
        members = y == label
        fits = members & found.isolated
        rows.append(
            {
                "label": label,
                "images": int(members.sum()),
                "poisons": int((members & truth).sum()),
                "distilled": int((members & kept).sum()),
                "poisons distilled": int((members & kept & truth).sum()),
                "isolated": int(fits.sum()),
                "poisons isolated": int((fits & truth).sum()),
                "ratio": float(found.ratios.get(label, 1.0)),
                "cleansed": label in found.cleansed,
            }
        )
    return pd.DataFrame(rows)


def confusion_over_runs(
    experiments: dict,
    runs,
    detector: ConfusionTraining,
    device: str = "auto",
    n_tune: int = 5000,
) -> pd.DataFrame:
    """Confusion Training (``detector``) on every attack (``{name: Experiment}``) at
    every ``(seed, target_label)`` in ``runs``, met as the matrix meets them
    (:func:`.matrix.matrix_runs`: the same model, clean set and seed): one
    :func:`confusion_labels_table` row per (attack, run, label), cached - a run trains
    for minutes."""
    tables = []
    for attack, seed, target, result, defender in matrix_runs(
        experiments, runs, device, n_tune
    ):
        spec = {
            "kind": "confusion_over_runs",
            "model": result.key,
            "detector_params": asdict(detector),
            "defender_data": tensor_digest(defender.x_tune, defender.y_tune),
            "seed": seed,
        }
        table = _cached_table(
            spec,
            lambda: _confusion_run(result, detector, seed, device, defender),
            (_confusion_run, type(detector)),
            device,
        )
        tables.append(table.assign(attack=attack, seed=seed, target=target))
    columns = ["attack", "seed", "target"]
    table = pd.concat(tables, ignore_index=True)
    return table[columns + [c for c in table.columns if c not in columns]]


def _confusion_run(result, detector, seed, device, defender) -> pd.DataFrame:
    found, _ = detect_and_score(result, detector, seed, device, defender)
    _, y, truth = training_set(result)
    return confusion_labels_table(found, y, truth)


def confusion_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (attack, run) of :func:`confusion_over_runs`: where the poisons were
    at each stage - in the last distilled set (against its size), isolated by the
    confused model - what the final test cleansed (the target? which genuine labels?),
    and the detection's precision, recall and F1 against the true flags (those of the
    matrix's cell)."""
    rows = []
    for (attack, seed, target), run in table.groupby(
        ["attack", "seed", "target"], sort=False
    ):
        on_target = run[run["label"] == target].iloc[0]
        others = run[run["label"] != target]
        cleansed = run[run["cleansed"]]
        flagged = int(cleansed["isolated"].sum())
        caught = int(cleansed["poisons isolated"].sum())
        poisons = int(run["poisons"].sum())
        precision = caught / flagged if flagged else 0.0
        recall = caught / poisons if poisons else 0.0
        rows.append(
            {
                "attack": attack,
                "seed": seed,
                "target": target,
                "images": int(run["images"].sum()),
                "target's images": int(on_target["images"]),
                "poisons": poisons,
                "distilled": int(run["distilled"].sum()),
                "poisons distilled": int(run["poisons distilled"].sum()),
                "poisons isolated": int(run["poisons isolated"].sum()),
                "target's ratio": float(on_target["ratio"]),
                "target cleansed": bool(on_target["cleansed"]),
                "genuine labels cleansed": ", ".join(
                    str(c) for c in others.loc[others["cleansed"], "label"]
                ),
                "flagged": flagged,
                "precision": precision,
                "recall": recall,
                "f1": (
                    2 * precision * recall / (precision + recall) if caught else 0.0
                ),
            }
        )
    return pd.DataFrame(rows)
