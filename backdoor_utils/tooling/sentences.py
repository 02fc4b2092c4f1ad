"""The sentences chapters glue: each chosen from a measured number (so a rerun with
other parameters never leaves a false sentence on the page), and where a chapter was
computed (:func:`computed_with`)."""

from __future__ import annotations


import pandas as pd
import torch

from ..core.runtime import processor_name
from ..defenses.abl import ABL
from ..core.training import precision_override, resolve_device, training_precision


def precision_forced() -> bool:
    """True when ``BACKDOOR_BF16=0/1`` sets the training precision instead of the
    hardware."""
    return precision_override() is not None


def computed_with(device: str = "auto") -> str:
    """For a chapter's end ("Computed on ..."): where it executed (processor and torch
    threads, or the GPU; PyTorch) and in which precision its models are trained - the
    same seed gives slightly different numbers in fp32 and under bf16 autocast, so a
    reader comparing a rerun needs to know which."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        where = f"the GPU {torch.cuda.get_device_name(dev)}"
    else:
        threads = torch.get_num_threads()
        where = (
            f"the CPU {processor_name()} ({threads} torch"
            f" thread{'' if threads == 1 else 's'})"
        )
    bf16 = (
        training_precision(device) == "bf16"
    )  # BACKDOOR_BF16=0/1 overrides the hardware there
    if precision_forced():
        why = "as BACKDOOR_BF16 sets"
    else:
        why = (
            "this hardware computes bf16 natively"
            if bf16
            else "this hardware has no native bf16"
        )
    precision = "under bf16 autocast" if bf16 else "in fp32"
    return (
        f"{where} with PyTorch {torch.__version__}, models trained {precision} ({why})"
    )


def verdict(
    value: float,
    threshold: float,
    at_or_above: str,
    below: str,
    missing: str = "was not measured",
) -> str:
    """The sentence that holds for a measured ``value``: ``at_or_above`` when value >=
    threshold, else ``below`` (``missing`` for NaN), so a rerun never leaves a false
    sentence on the page.
    """
    if value is None or value != value:
        return missing
    return at_or_above if value >= threshold else below


def number_or(value: float, fmt: str = ".4f", missing: str = "none") -> str:
    """``value`` formatted, or ``missing`` for NaN/None (a glued NaN would print
    "nan")."""
    return missing if value is None or value != value else format(value, fmt)


def ca_change(drop_pp: float, reference: str = "the clean model") -> str:
    """Where a clean accuracy lies against ``reference``'s, from ``drop_pp`` (reference
    minus it, in percentage points) as the page shows it (2 decimals): "0.03 percentage
    points below the clean model", "0.02 ... above ...", or "the same as the clean
    model's" - never "a drop of -0.02".
    """
    if drop_pp is None or drop_pp != drop_pp:
        return f"not compared with {reference}"
    shown = round(abs(drop_pp), 2)
    if shown == 0:
        return f"the same as {reference}'s to 0.01 percentage points"
    return (
        f"{shown:.2f} percentage points {'below' if drop_pp > 0 else 'above'}"
        f" {reference}"
    )


def learning_pays(lead: str, gains, moved, threshold: float = 0.05) -> str:
    """Chapter 04's verdict on a learned trigger against the same trigger frozen at its
    start: ``gains`` are its ASR minus the frozen one's (one per scarce poison rate
    compared), ``moved`` the largest change of a trigger pixel in those runs (not in the
    chapter's run at the full rate). "pays" when some gain reaches ``threshold``; else
    how close the two are - never "at most -0.0003 above"."""
    gains = [float(g) for g in gains]
    if not gains or any(g != g for g in gains):
        return f"{lead}, the learned and the fixed patch were not compared."
    best = max(gains)
    if best >= threshold:
        return (
            f"{lead}, learning the patch pays where poison is scarce: its ASR is up to"
            f" {best:.4f} above the fixed patch's (training moved its pixels there by"
            f" up to {moved:.3f})."
        )
    return (
        f"{lead}, learning the patch brings no measurable gain where poison is scarce:"
        f" its ASR is within {max(abs(g) for g in gains):.4f} of the fixed patch's at"
        f" every rate compared (the book counts {threshold:g} as a gain), and training"
        f" moved its pixels there by at most {moved:.3f}."
    )


def adaptive_verdict(scores: dict, threshold: float = 0.2) -> str:
    """Chapter 09's verdict on the adaptive attack: ``scores`` maps each detection
    score's name to its ``(against the plain attack, against the adaptive one)`` means.
    "defeats" when some score drops by ``threshold`` or more; a score that rises by as
    much is named too - there the adaptive attack made the poisons easier to find, not
    harder."""
    change = {name: after - before for name, (before, after) in scores.items()}
    if any(d != d for d in change.values()):
        return "The adaptive attack was not compared with the plain one."
    fallen = [f"{name} by {-d:.3f}" for name, d in change.items() if d <= -threshold]
    risen = [f"{name} by {d:.3f}" for name, d in change.items() if d >= threshold]
    if fallen:
        text = (
            "The adaptive attack defeats a latent-separation defense: it lowers"
            f" {' and '.join(fallen)} (the book counts a drop of {threshold:g} or more"
            " as a defeat)."
        )
    else:
        text = (
            "On this model the adaptive attack does not defeat either"
            f" latent-separation defense by a wide margin (no drop of {threshold:g} in"
            " either detection score)."
        )
    if risen:
        text += (
            f" It even raises {' and '.join(risen)}: against"
            f" {'that defense' if len(risen) == 1 else 'them'} it makes the poisons"
            " easier to find, not harder."
        )
    return text


def spectral_choice(
    recall: dict,
    reference: tuple = ("conv", "reference"),
    first: tuple = ("penultimate", "centred_squared"),
    target: float = 0.9,
) -> str:
    """What decides Spectral Signatures' recall, from ``recall`` {(layer, scoring):
    mean recall}: the reference setting against the book's first one (``first``), the
    scoring's effect alone (on the first setting's layer) and the layer's (with the
    reference's scoring), and whether the reference meets ``target`` - or which setting
    comes closest."""
    ref, old = recall[reference], recall[first]
    scoring_alone = recall[(first[0], reference[1])]
    scoring_effect, layer_effect = scoring_alone - old, ref - scoring_alone
    cause = "the layer" if abs(layer_effect) > abs(scoring_effect) else "the scoring"
    best = max(recall, key=recall.get)
    text = (
        f"The reference setting ({reference[0]} layer, {reference[1]} scoring) catches"
        f" {ref:.3f} of the poisons, the book's first one ({first[0]} layer,"
        f" {first[1]} scoring) {old:.3f}. The scoring alone moves recall by"
        f" {scoring_effect:+.3f} (on the {first[0]} layer), the layer by"
        f" {layer_effect:+.3f} (with the {reference[1]} scoring): {cause} decides more."
    )
    if ref >= target:
        return text + f" The reference setting meets the target of recall >= {target}."
    return text + (
        f" The reference setting misses the target of recall >= {target}; the best of"
        f" the settings tried ({best[0]} layer, {best[1]} scoring) catches"
        f" {recall[best]:.3f}."
    )


def price_sentence(name: str, need: str, outcomes: dict, max_pp: float) -> str:
    """Chapter 08's verdict on a defense run by run, from
    :func:`~..orchestration.matrix.repair_outcomes`: at how many runs its metric meets
    ``need`` and whether its clean-accuracy price stays within ``max_pp`` points - a
    repair that removes the backdoor at a price the need does not allow is named as
    such."""
    o = outcomes
    if not o["runs"]:
        return f"{name} was judged at no run (no attack implanted a backdoor)."
    text = (
        f"{name} meets its metric ({need}) at {o['metric_met']} of the {o['runs']} runs"
        f" where an attack worked"
    )
    costs = f"{o['cost_min']:.2f} to {o['cost_max']:.2f} points of clean accuracy"
    if o["price_met"] == o["runs"]:
        return text + f", and costs at most {max_pp:g} point at every one ({costs})."
    return text + (
        f"; its price ({costs}) exceeds the {max_pp:g} point the need allows at"
        f" {o['runs'] - o['price_met']} of them, so it meets the whole need at"
        f" {o['both_met']}."
    )


def isolation_sentence(
    book: pd.DataFrame, paper: pd.DataFrame, book_rate: float, paper_rate: float
) -> str:
    """Chapter 08's account of ABL's isolation, from two tables of
    :func:`~..orchestration.matrix.isolation_rows`: over the matrix (every attack, the
    book's rates, the lowest ``book_rate``) and at the paper's ``paper_rate`` (the
    pixel attack) - whether the images it set apart are the poisons, against the
    precision a random choice of as many would reach (the poison share), and what its
    unlearning left."""
    if not len(book) or not len(paper):
        return "ABL was not run."
    need = ABL.column.need  # the ASR after a defender needs
    precision = book["isolation precision"]
    below_random = precision.mean() < book_rate
    text = (
        f"Over the matrix's {len(book)} runs ABL's isolation sets apart poisons with"
        f" precision {precision.mean():.3f} on average (exactly 0 at"
        f" {int((precision == 0).sum())} of them)"
    )
    if below_random:
        text += (
            f", below the {book_rate:.2f} a random choice of as many images would"
            f" reach at the book's {book_rate:.0%} poison rate: the images its LGA"
            " training fits best are genuine digits, not"
            " the poisons, so it unlearns genuine images and leaves the backdoor (ASR"
            f" after {book['ASR after'].mean():.2f} on average)."
        )
    else:
        text += f" (ASR after {book['ASR after'].mean():.2f} on average)."
    found = paper["isolation precision"]
    removed = int((paper["ASR after"] <= need).sum())
    text += (
        f" At the paper's {paper_rate:.0%} on the pixel attack its precision is"
        f" {', '.join(f'{p:.3f}' for p in found)} at the {len(paper)} runs and ASR"
        f" after is at most {need:g} at {removed} of them: "
    )
    held = found >= 0.5
    if not held.any():
        either = " either" if below_random else ""
        return text + f"its premise does not hold there{either}."
    if held.all():
        text += (
            "there the poisons are the images its training fits first, as the method"
            " assumes"
        )
        text += (
            " - its premise depends on how many poisons there are."
            if below_random
            else "."
        )
    else:
        text += (
            f"the poisons are the images its training fits first at {int(held.sum())}"
            f" of the {len(paper)} runs only."
        )
    left = paper["ASR after"][held]
    if (left > need).all():
        text += (
            " Where it did isolate them, unlearning them left ASR"
            f" {', '.join(f'{a:.2f}' for a in left)}: on this model, isolating the"
            " poisons was not enough to remove the backdoor."
        )
    return text


def confusion_stages_sentence(runs: pd.DataFrame, fitted_floor: float = 0.5) -> str:
    """Chapter 09's account of where Confusion Training lost the poisons, attack by
    attack, from :func:`~..orchestration.studies.confusion_summary`: what the last
    distilled set kept, whether the final confused model still fits the poisons (at
    least ``fitted_floor`` of them: the confusion did its part), and what the final
    test cleansed - so that the chapter names the stage that failed."""
    if not len(runs) or not runs["poisons"].all():
        return "Confusion Training was not run on a poisoned set."
    return " ".join(
        _confusion_stages(attack, group, fitted_floor)
        for attack, group in runs.groupby("attack", sort=False)
    )


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _span(values: pd.Series, fmt: str) -> str:
    """``low to high`` of ``values`` in ``fmt``, or the one value when they agree."""
    low, high = format(values.min(), fmt), format(values.max(), fmt)
    return low if low == high else f"{low} to {high}"


def _confusion_stages(attack: str, runs: pd.DataFrame, fitted_floor: float) -> str:
    n = len(runs)
    kept = runs["poisons distilled"] / runs["poisons"]
    fitted = runs["poisons isolated"] / runs["poisons"]
    richer = (runs["poisons distilled"] / runs["distilled"]) / (
        runs["poisons"] / runs["images"]
    )
    hit = runs["target cleansed"]
    genuine = int((runs["genuine labels cleansed"] != "").sum())
    text = (
        f"On {attack}, over {_runs(n)}, the last distilled set"
        f" ({_span(runs['distilled'], ',')} images) kept {_span(kept, '.0%')} of the"
        f" poisons ({_span(richer, '.0f')} times their share of the training set), the"
        f" final confused model still fits {_span(fitted, '.0%')} of them, and the"
        f" final test cleansed the target at {int(hit.sum())} of the {n} runs and"
        f" genuine labels at {genuine}"
    )
    if hit.all() and not genuine:
        return text + ": both stages work here."
    lost = fitted < fitted_floor
    if not lost.any():
        why = []
        if not hit.all():
            share = _span(runs["poisons"] / runs["target's images"], ".1%")
            why.append(
                f"at {_runs(int((~hit).sum()))} the target's ratio - a mean over all"
                f" its images, of which the poisons are {share} - stays below the"
                " threshold"
            )
        if genuine:
            why.append(
                f"at {genuine} it also fits groups of genuine digits that stand apart"
                " from the rest of their label, and the threshold cleanses them"
            )
        return text + (
            ". The confusion did its part at every run - the confused model fits the"
            " poisons - so it is the final test, not the confusion, that fails here: "
            + "; ".join(why)
            + "."
        )
    if lost.all():
        return text + (
            ". The confusion itself failed: at every run the confused model fits fewer"
            f" than {fitted_floor:.0%} of the poisons, so no final test could find"
            " them."
        )
    return text + (
        f". At {int(lost.sum())} of the runs the confused model fits fewer than"
        f" {fitted_floor:.0%} of the poisons (the confusion failed); at the other"
        f" {int((~lost).sum())} it fits them, and the final test cleansed the target at"
        f" {int((hit & ~lost).sum())} of those."
    )
