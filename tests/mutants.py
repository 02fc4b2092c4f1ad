"""Break one method at a time and check that the unit tests guarding it fail (``make
mutants``).

Each mutant is a small, plausible mistake in an attack, a detector, a defense or the
scoring - the kind that leaves a chapter running and its numbers looking fine. It is
applied to a copy of the package (the working tree is never touched), then the listed
unit tests run on that copy with a cache of their own; they must fail. A mutant they
survive is a method the suite does not guard.

    python -m tests.mutants                 # all of them (about 15 minutes on 2 cores)
    python -m tests.mutants strip fine      # those whose name contains a word given

A unit test (tests/unit/test_mutants.py) checks that every mutant still finds the code
it breaks, so a refactor keeps this list current. Add a mutant with every new method.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent


class Mutant(NamedTuple):
    name: str
    module: str  # path inside backdoor_utils/
    original: str  # must occur exactly once in the module
    broken: str
    tests: tuple  # unit test files (under tests/unit/) that must fail


def _m(name, module, original, broken, *tests):
    return Mutant(name, module, original, broken, tests)


MUTANTS = [
    # attacks and poisoning
    _m(
        "dirty-label poisons the target class too",
        "attacks/base.py",
        "candidates = torch.nonzero(y != target_label).flatten()\n    return"
        " draw_samples",
        "candidates = torch.arange(len(y))\n    return draw_samples",
        "attacks/test_base.py",
    ),
    _m(
        "dirty-label does not relabel",
        "attacks/base.py",
        "        y_out[idx] = new_label\n",
        "        pass\n",
        "attacks/test_base.py",
    ),
    _m(
        "clean-label poisons other classes",
        "attacks/base.py",
        "candidates = torch.nonzero(y == target_label).flatten()\n    idx",
        "candidates = torch.nonzero(y != target_label).flatten()\n    idx",
        "attacks/test_base.py",
    ),
    _m(
        "patch one row off",
        "attacks/patch.py",
        "out[..., self.row : self.row + self.size,",
        "out[..., self.row + 1 : self.row + 1 + self.size,",
        "attacks/test_patch.py",
    ),
    _m(
        "blended alpha swapped",
        "attacks/blended.py",
        "return self.alpha * self.key().to(x.device, x.dtype) + (1 - self.alpha) * x",
        "return (1 - self.alpha) * self.key().to(x.device, x.dtype) + self.alpha * x",
        "attacks/test_blended.py",
    ),
    _m(
        "SIG overflows white pixels",
        "attacks/sig.py",
        "return (x + self.signal().to(x.device, x.dtype)).clamp(0.0, 1.0)",
        "return x + self.signal().to(x.device, x.dtype)",
        "attacks/test_sig.py",
        "attacks/test_base.py",
    ),
    _m(
        "SIG poisons with the test-time delta, not the training one",
        "attacks/sig.py",
        "trigger = trigger or SinusoidTrigger(self.sig_delta, self.sig_frequency)",
        "trigger = trigger or self.trigger(seed)",
        "attacks/test_sig.py",
    ),
    _m(
        "SIG's ramp spans the width minus one column",
        "attacks/sig.py",
        "(self.delta * columns / 28)",
        "(self.delta * columns / 27)",
        "attacks/test_sig.py",
    ),
    _m(
        "SIG's ramp poisons with the test-time delta",
        "attacks/sig.py",
        "trigger = trigger or RampTrigger(self.sig_delta)",
        "trigger = trigger or self.trigger(seed)",
        "attacks/test_sig.py",
    ),
    _m(
        "SIG's stronger test signal trains a model of its own",
        "orchestration/experiments.py",
        'test_only = getattr(exp.method, "test_only", ())',
        "test_only = ()",
        "attacks/test_sig.py",
    ),
    _m(
        "a test signal scored with the training signal's cached ASR",
        "orchestration/experiments.py",
        '{"kind": "attack_metrics", **exp.spec(), "model": key}',
        '{"kind": "attack_metrics", **training_spec(exp), "model": key}',
        "attacks/test_sig.py",
    ),
    _m(
        "SIG's map chooses from one run, not every run",
        "orchestration/studies.py",
        'asr=pd.NamedAgg("asr", "min"),',
        'asr=pd.NamedAgg("asr", "first"),',
        "orchestration/test_studies.py",
    ),
    _m(
        "Neural Cleanse's studies skip the target's class on clean models",
        "orchestration/studies.py",
        "report, target if backdoored else None, defense.anomaly_threshold",
        "report, target, defense.anomaly_threshold",
        "orchestration/test_studies.py",
    ),
    _m(
        "Neural Cleanse's studies read label 0's index as the target's",
        "orchestration/studies.py",
        '"target_index": np.nan if target is None else float(index[target]),',
        '"target_index": np.nan if target is None else float(index[0]),',
        "orchestration/test_studies.py",
    ),
    _m(
        "Confusion Training's confused label may equal the prediction",
        "detectors/confusion_training.py",
        "shift = step % (N_CLASSES - 1) + 1",
        "shift = step % N_CLASSES",
        "detectors/test_confusion_training.py",
    ),
    _m(
        "Confusion Training distils the highest losses",
        "detectors/confusion_training.py",
        "order = torch.argsort(losses)",
        "order = torch.argsort(losses, descending=True)",
        "detectors/test_confusion_training.py",
    ),
    _m(
        "Confusion Training flags by the prediction, not the given label",
        "detectors/confusion_training.py",
        "flags |= torch.from_numpy((y == c).numpy() & agrees)",
        "flags |= torch.from_numpy(agrees)",
        "detectors/test_confusion_training.py",
    ),
    _m(
        "DPA partitions by index, not by content",
        "defenses/dpa.py",
        "return pixel_sums(x) % k",
        "return torch.arange(len(x)) % k",
        "defenses/test_dpa.py",
    ),
    _m(
        "DPA's certificate ignores the tie-break toward the smaller label",
        "defenses/dpa.py",
        "rivals = votes + (labels[None, :] < predicted[:, None]).long()",
        "rivals = votes.clone()",
        "defenses/test_dpa.py",
    ),
    _m(
        "DPA's certificate counts a moved vote once",
        "defenses/dpa.py",
        'torch.div(top - rivals.max(1).values, 2, rounding_mode="floor")',
        "top - rivals.max(1).values",
        "defenses/test_dpa.py",
    ),
    _m(
        "DPA's base models draw their batches from a shared random stream",
        "defenses/dpa.py",
        "members[round_order(ids[members], r, seed)]",
        "members[torch.randperm(len(members))]",
        "defenses/test_dpa.py",
    ),
    _m(
        "WaNet trains without the authors' post-warp augmentation",
        "attacks/wanet.py",
        "PostWarpAugment() if self.post_augment else None",
        "None",
        "attacks/test_wanet.py",
    ),
    _m(
        "WaNet's crop shifts by up to twice the padding",
        "attacks/wanet.py",
        "torch.randint(0, 2 * pad + 1, (2, n), generator=generator)",
        "torch.randint(0, 4 * pad + 1, (2, n), generator=generator) - pad",
        "attacks/test_wanet.py",
    ),
    _m(
        "WaNet rotates every image of a rotated batch",
        "attacks/wanet.py",
        "chosen = torch.rand(n, generator=generator) < self.image_rotate_p",
        "chosen = torch.ones(n, dtype=torch.bool)",
        "attacks/test_wanet.py",
    ),
    _m(
        "WaNet noise mode without noise",
        "attacks/wanet.py",
        "return (base + noise.to(base.device)).clamp(-1, 1)",
        "return base.expand(n, -1, -1, -1).clone()",
        "attacks/test_wanet.py",
    ),
    _m(
        "the learned patch is stamped on every image",
        "attacks/learned.py",
        "out = torch.where(flags.view(-1, 1, 1, 1), self.trigger.apply(xb), xb)",
        "out = self.trigger.apply(xb)",
        "attacks/test_learned.py",
        "attacks/test_base.py",
    ),
    _m(
        "the learned patch is never trained",
        "attacks/learned.py",
        "        return [self.trigger.raw]\n",
        "        return []\n",
        "attacks/test_learned.py",
        "attacks/test_base.py",
    ),
    _m(
        "the noise trigger overflows",
        "attacks/noise.py",
        "return (x + self.pattern().to(x.device, x.dtype)).clamp_(0.0, 1.0)",
        "return x + self.pattern().to(x.device, x.dtype)",
        "attacks/test_noise.py",
        "attacks/test_base.py",
    ),
    _m(
        "the blur ignores its sigma",
        "attacks/blur.py",
        "return gaussian_blur(x, [self.kernel_size] * 2, [self.sigma] * 2)",
        "return gaussian_blur(x, [self.kernel_size] * 2, [1.0] * 2)",
        "attacks/test_blur.py",
        "attacks/test_base.py",
    ),
    _m(
        "a reversed trigger keeps the image where its mask is",
        "defenses/neural_cleanse.py",
        "        return (1 - m) * x + m * self.pattern.to(x.device, x.dtype)",
        "        return m * x + (1 - m) * self.pattern.to(x.device, x.dtype)",
        "defenses/test_neural_cleanse.py",
    ),
    _m(
        "Neural Cleanse lowers the cost after successes",
        "defenses/neural_cleanse.py",
        "                self.cost * self.multiplier,\n",
        "                self.cost / self.multiplier,\n",
        "defenses/test_neural_cleanse.py",
    ),
    # metrics and data
    _m(
        "ASR counts target-class images",
        "core/metrics.py",
        "    keep = non_target_mask(y_test, target_label)\n    preds",
        "    keep = torch.ones_like(y_test, dtype=torch.bool)\n    preds",
        "core/test_metrics.py",
    ),
    _m(
        "validation split overlaps training",
        "core/data.py",
        "val_idx, train_idx = order[:VALIDATION_SIZE], order[VALIDATION_SIZE:]",
        "val_idx, train_idx = order[:VALIDATION_SIZE], order",
        "core/test_data.py",
    ),
    _m(
        "corrupt data accepted",
        "core/data.py",
        "    if actual != expected:\n",
        "    if actual != expected and False:\n",
        "core/test_data.py",
    ),
    _m(
        "SCALE-UP's scores inverted (the consistent inputs taken as clean)",
        "detectors/scale_up.py",
        "    suspicious_below = False",
        "    suspicious_below = True",
        "detectors/test_scale_up.py",
    ),
    _m(
        "SCALE-UP scales without clipping to the image range",
        "detectors/scale_up.py",
        "predict(model, (x * h).clamp(0.0, 1.0)) == own",
        "predict(model, x * h) == own",
        "detectors/test_scale_up.py",
    ),
    # the matrix's price
    _m(
        "DER adds the accuracy drop (BackdoorBench's other code path)",
        "core/metrics.py",
        "return (asr_drop - ca_drop + 1) / 2",
        "return (asr_drop + ca_drop + 1) / 2",
        "core/test_metrics.py",
    ),
    _m(
        "the matrix ignores a repair's clean-accuracy price",
        "orchestration/matrix.py",
        "priced and ca_cost_pp > MAX_CA_COST_PP",
        "False and ca_cost_pp > MAX_CA_COST_PP",
        "orchestration/test_matrix.py",
    ),
    _m(
        "a matrix cell is met when one seed meets the need",
        "orchestration/matrix.py",
        "n_met.eq(n_seeds, axis=0)",
        "n_met.gt(0)",
        "orchestration/test_matrix.py",
    ),
    _m(
        "a detector's price read from the attacked model, not the retrained one",
        "orchestration/defend.py",
        "_price_of(result, defender, retrain_without(result, found.flags, device))",
        "_price_of(result, defender, result.model)",
        "orchestration/test_defend.py",
    ),
    _m(
        "a map's choice taken from one seed, not every seed",
        "orchestration/studies.py",
        'asr=("asr", "min"),',
        'asr=("asr", "first"),',
        "orchestration/test_studies.py",
    ),
    _m(
        "I-BAU's hypergradient ignores the path through the perturbation",
        "defenses/ibau.py",
        "through = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)",
        "through = [None] * len(params)",
        "defenses/test_ibau.py",
    ),
    _m(
        "I-BAU's universal perturbation descends the loss",
        "defenses/ibau.py",
        "loss = -F.cross_entropy(model(x + delta), own)",
        "loss = F.cross_entropy(model(x + delta), own)",
        "defenses/test_ibau.py",
    ),
    _m(
        "I-BAU's fixed-point method one iteration short",
        "defenses/ibau.py",
        "    for _ in range(steps - 1):\n",
        "    for _ in range(steps - 2):\n",
        "defenses/test_ibau.py",
    ),
    _m(
        "ABL's LGA ascends where it should descend",
        "defenses/abl.py",
        "return torch.sign(loss - gamma) * loss",
        "return torch.sign(gamma - loss) * loss",
        "defenses/test_abl.py",
    ),
    _m(
        "ABL unlearns by descent, not ascent",
        "defenses/abl.py",
        "lambda loss: -loss",
        "lambda loss: loss",
        "defenses/test_abl.py",
    ),
    _m(
        "ABL isolates the highest losses",
        "defenses/abl.py",
        "torch.argsort(losses, stable=True)",
        "torch.argsort(-losses, stable=True)",
        "defenses/test_abl.py",
    ),
    # detectors
    _m(
        "Spectral Signatures' truncated decomposition orders its directions smallest first",
        "detectors/spectral_signatures.py",
        'order = np.argsort(-values, kind="stable")',
        'order = np.argsort(values, kind="stable")',
        "detectors/test_spectral_signatures.py",
    ),
    _m(
        "Spectral Signatures removes the lowest scores",
        "detectors/spectral_signatures.py",
        "descending=True)[:n_remove]",
        "descending=False)[:n_remove]",
        "detectors/test_spectral_signatures.py",
    ),
    _m(
        "Spectral Signatures does not centre",
        "detectors/spectral_signatures.py",
        "centred = rows - rows.mean(0, keepdim=True)",
        "centred = rows",
        "detectors/test_spectral_signatures.py",
    ),
    _m(
        "Spectral Signatures removes epsilon, not 1.5 epsilon",
        "detectors/spectral_signatures.py",
        "np.floor(1.5 * self.epsilon",
        "np.floor(1.0 * self.epsilon",
        "detectors/test_spectral_signatures.py",
    ),
    _m(
        "Spectral Signatures reads the penultimate layer, not the reference's conv block",
        "detectors/spectral_signatures.py",
        'layer: str = "conv"',
        'layer: str = "penultimate"',
        "detectors/test_spectral_signatures.py",
    ),
    _m(
        "Spectral Signatures projects centred rows where the reference code does not",
        "detectors/spectral_signatures.py",
        "return (rows @ vh[:k].T).abs(), values[:k]",
        "return (centred @ vh[:k].T).abs(), values[:k]",
        "detectors/test_spectral_signatures.py",
    ),
    _m(
        "STRIP flags high entropy",
        "detectors/strip.py",
        "StripResult(h < threshold",
        "StripResult(h > threshold",
        "detectors/test_strip.py",
    ),
    _m(
        "STRIP threshold at 1 - FRR",
        "detectors/strip.py",
        "norm.ppf(self.frr, ",
        "norm.ppf(1 - self.frr, ",
        "detectors/test_strip.py",
    ),
    _m(
        "STRIP thresholds at the empirical quantile, not the paper's normal fit",
        "detectors/strip.py",
        'if self.threshold_rule == "normal":',
        "if False:",
        "detectors/test_strip.py",
    ),
    _m(
        "STRIP saturates the reference's float sum",
        "detectors/strip.py",
        'if self.blend == "saturated":',
        "if True:",
        "detectors/test_strip.py",
    ),
    _m(
        "STRIP overlays shared by every input",
        "detectors/strip.py",
        "picks = self.overlays(x_pool, len(x), seed)",
        "picks = self.overlays(x_pool, 1, seed).expand(len(x), -1)",
        "detectors/test_strip.py",
    ),
    _m(
        "activation clustering suspects the largest cluster",
        "detectors/activation_clustering.py",
        "            if size <= size_threshold and i != largest\n",
        "            if i == largest\n",
        "detectors/test_activation_clustering.py",
    ),
    _m(
        "reclassification verdict inverted",
        "detectors/activation_clustering.py",
        "ratio <= ratio_threshold)",
        "ratio > ratio_threshold)",
        "detectors/test_activation_clustering.py",
    ),
    _m(
        "reclassifier trained with the candidates",
        "detectors/activation_clustering.py",
        "keep = torch.from_numpy(~excluded)",
        "keep = torch.ones(len(y), dtype=torch.bool)",
        "detectors/test_activation_clustering.py",
    ),
    # defenses
    _m(
        "fine-pruning prunes the most active channels",
        "defenses/fine_pruning.py",
        "mean_channel_activation(model, x_clean).argsort()",
        "mean_channel_activation(model, x_clean).argsort(descending=True)",
        "defenses/test_fine_pruning.py",
    ),
    _m(
        "fine-pruning stops one channel late",
        "defenses/fine_pruning.py",
        "            return n - 1\n",
        "            return n\n",
        "defenses/test_fine_pruning.py",
    ),
    _m(
        "fine-pruning's count chosen on the tuning images",
        "defenses/fine_pruning.py",
        '        model, {"val_acc": (defender.x_select, defender.y_select)}\n',
        '        model, {"val_acc": (defender.x_tune, defender.y_tune)}\n',
        "defenses/test_fine_pruning.py",
    ),
    _m(
        "fine-tuning on the selection images",
        "defenses/fine_pruning.py",
        "    return train(\n        data.x_tune,\n        data.y_tune,\n",
        "    return train(\n        data.x_select,\n        data.y_select,\n",
        "defenses/test_fine_pruning.py",
    ),
    _m(
        "Neural Cleanse suspects large masks",
        "defenses/neural_cleanse.py",
        "(median - l1_norms[valid])",
        "(l1_norms[valid] - median)",
        "defenses/test_neural_cleanse.py",
    ),
    _m(
        "Neural Cleanse without the MAD consistency constant",
        "defenses/neural_cleanse.py",
        "mad = 1.4826 * np.median",
        "mad = np.median",
        "defenses/test_neural_cleanse.py",
    ),
    _m(
        "Neural Cleanse reverses in fp32 at the training precision",
        "defenses/neural_cleanse.py",
        'enabled = precision == "training" and bf16_native(dev.type)',
        'enabled = precision == "fp32" and bf16_native(dev.type)',
        "defenses/test_neural_cleanse.py",
    ),
    _m(
        "Neural Cleanse keys an fp32 reversal with its precision",
        "defenses/neural_cleanse.py",
        '        if self.precision == "fp32":\n            return budget\n',
        "",
        "defenses/test_neural_cleanse.py",
    ),
    _m(
        "unlearning stamps nothing",
        "defenses/neural_cleanse.py",
        "    x[stamp] = reversed_trigger.apply(x[stamp])\n",
        "",
        "defenses/test_neural_cleanse.py",
    ),
    _m(
        "unlearning relabels the stamped images to the trigger's class",
        "defenses/neural_cleanse.py",
        "    return train(\n        x,\n        data.y_tune,\n",
        "    y = data.y_tune.clone()\n    y[stamp] = reversed_trigger.label\n    return train(\n        x,\n        y,\n",
        "defenses/test_neural_cleanse.py",
    ),
    _m(
        "the defender tunes on test images",
        "defenses/base.py",
        "        splits.x_val[:n_tune],\n        splits.y_val[:n_tune],\n",
        "        splits.x_test[:n_tune],\n        splits.y_test[:n_tune],\n",
        "defenses/test_base.py",
    ),
    _m(
        "tuning and selection images overlap",
        "defenses/base.py",
        "        splits.x_val[-n_select:],\n        splits.y_val[-n_select:],\n",
        "        splits.x_val[:n_select],\n        splits.y_val[:n_select],\n",
        "defenses/test_base.py",
    ),
    # scoring and verdicts
    _m(
        "STRIP's threshold set on test images",
        "orchestration/defend.py",
        "threshold = method.threshold(result.model, defender.x_select, defender.x_tune,"
        " seed)",
        "threshold = method.threshold(result.model, splits.x_test[:n_inputs],"
        " defender.x_tune, seed)",
        "orchestration/test_defend.py",
    ),
    _m(
        "STRIP scored on triggered target-class images",
        "orchestration/defend.py",
        "triggered = result.trigger.apply(splits.x_test[keep][:n_inputs])",
        "triggered = result.trigger.apply(splits.x_test[:n_inputs])",
        "orchestration/test_defend.py",
    ),
    _m(
        "STRIP's FAR counts the rejected",
        "orchestration/defend.py",
        "float((~flagged(s_trig)).float().mean())",
        "float(flagged(s_trig).float().mean())",
        "orchestration/test_defend.py",
    ),
    _m(
        "detections scored against the target label",
        "orchestration/defend.py",
        "return result.poisoned.x, result.poisoned.y, result.poisoned.is_poison",
        "return result.poisoned.x, result.poisoned.y, result.poisoned.y =="
        " result.experiment.target_label",
        "orchestration/test_defend.py",
    ),
    _m(
        "the matrix scores activation clustering by recall",
        "detectors/activation_clustering.py",
        '"activation\\nclustering", "detection", "f1")',
        '"activation\\nclustering", "detection", "recall")',
        "orchestration/test_defend.py",
    ),
    _m(
        "clean accuracy measured on validation images",
        "orchestration/experiments.py",
        '        "clean_acc": clean_accuracy(model, splits.x_test, splits.y_test),\n',
        '        "clean_acc": clean_accuracy(model, splits.x_val, splits.y_val),\n',
        "orchestration/test_defend.py",
    ),
    _m(
        "retraining keeps the flagged images",
        "orchestration/experiments.py",
        "    keep = ~remove\n",
        "    keep = torch.ones_like(remove)\n",
        "orchestration/test_defend.py",
    ),
    _m(
        "every run judged, backdoor or not",
        "orchestration/matrix.py",
        'runs["implanted"] = runs.asr >= min_asr',
        'runs["implanted"] = runs.asr >= 0',
        "orchestration/test_matrix.py",
    ),
    _m(
        "the defender's score not flipped where lower is better",
        "orchestration/matrix.py",
        "            score[d] = 1 - mean[d]",
        "            score[d] = mean[d]",
        "orchestration/test_matrix.py",
    ),
    _m(
        "a repair's runs counted whether the attack worked or not",
        "orchestration/matrix.py",
        '    rows = matrix[matrix.defense == defense].merge(worked, on=["attack", "seed"])\n',
        "    rows = matrix[matrix.defense == defense].reset_index(drop=True)\n",
        "orchestration/test_matrix.py",
    ),
    _m(
        "a repair's price ignored when both are counted",
        "orchestration/matrix.py",
        "    both = [run_meets_need(defense, v, c) for v, c in zip(rows.value, rows.ca_cost_pp)]",
        "    both = [meets_need(defense, v) for v, c in zip(rows.value, rows.ca_cost_pp)]",
        "orchestration/test_matrix.py",
    ),
    _m(
        "ABL's isolation compared with random at the wrong side",
        "tooling/sentences.py",
        "    below_random = precision.mean() < book_rate\n",
        "    below_random = precision.mean() >= book_rate\n",
        "tooling/test_sentences.py",
    ),
    _m(
        "ABL's unlearning blamed where it removed the backdoor",
        "tooling/sentences.py",
        "    if (left > need).all():\n",
        "    if (left > need).any():\n",
        "tooling/test_sentences.py",
    ),
    _m(
        "Confusion Training's study counts every poison of a label as isolated",
        "orchestration/studies.py",
        '"poisons isolated": int((fits & truth).sum()),',
        '"poisons isolated": int((members & truth).sum()),',
        "orchestration/test_studies.py",
    ),
    _m(
        "Confusion Training's summary reads label 0 as every run's target",
        "orchestration/studies.py",
        '        on_target = run[run["label"] == target].iloc[0]\n',
        '        on_target = run[run["label"] == 0].iloc[0]\n',
        "orchestration/test_studies.py",
    ),
    _m(
        "Confusion Training keeps only the flagged images as isolated",
        "detectors/confusion_training.py",
        "flags, ratios, cleansed, distilled, torch.from_numpy(agrees)",
        "flags, ratios, cleansed, distilled, flags",
        "detectors/test_confusion_training.py",
    ),
    _m(
        "Confusion Training's final test blamed where the confusion lost the poisons",
        "tooling/sentences.py",
        "    lost = fitted < fitted_floor\n",
        "    lost = fitted >= fitted_floor\n",
        "tooling/test_sentences.py",
    ),
]


def module_text(mutant: Mutant, package: Path = ROOT / "backdoor_utils") -> str:
    return (package / mutant.module).read_text()


def run(mutant: Mutant, python: str = sys.executable) -> tuple[bool, str]:
    """Apply ``mutant`` to a copy of the project and run its tests there: (caught,
    pytest's summary)."""
    with tempfile.TemporaryDirectory(prefix="backdoor-mutant-") as tmp:
        copy = Path(tmp) / "project"
        shutil.copytree(
            ROOT,
            copy,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "artifacts", "runs", "_build", "data", "__pycache__"
            ),
        )
        path = copy / "backdoor_utils" / mutant.module
        text = path.read_text()
        if text.count(mutant.original) != 1:
            raise ValueError(
                f"{mutant.name}: the code it breaks occurs"
                f" {text.count(mutant.original)} times in {mutant.module} (expected"
                " once): update tests/mutants.py"
            )
        path.write_text(text.replace(mutant.original, mutant.broken))
        env = {
            **os.environ,
            "PYTHONPATH": str(copy),
            "BACKDOOR_ARTIFACTS": str(Path(tmp) / "artifacts"),
            "BACKDOOR_DATA": os.environ.get("BACKDOOR_DATA", str(ROOT / "data")),
            "TQDM_DISABLE": "1",
        }
        tests = [f"tests/unit/{name}" for name in mutant.tests]
        done = subprocess.run(
            [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        failed = [
            line.split("::")[-1].split(" ")[0]
            for line in lines
            if line.startswith("FAILED")
        ]
        summary = (failed[0] + ": " if failed else "") + (
            lines[-1] if lines else done.stderr.strip()[-200:]
        )
        return done.returncode != 0, summary


def main(words: list[str]) -> int:
    chosen = [
        m
        for m in MUTANTS
        if not words or any(w.lower() in m.name.lower() for w in words)
    ]
    if not chosen:
        print(f"no mutant's name contains {' or '.join(words)}", file=sys.stderr)
        return 2
    missed = []
    for mutant in chosen:
        start = time.perf_counter()
        caught, summary = run(mutant)
        print(
            f"{'caught' if caught else 'MISSED'}  {mutant.name}"
            f" ({time.perf_counter() - start:.0f} s): {summary}",
            flush=True,
        )
        if not caught:
            missed.append(mutant.name)
    print(
        f"{len(chosen) - len(missed)} of {len(chosen)} mutants caught"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
