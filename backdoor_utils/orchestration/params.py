"""Validation of notebook parameters: one call right after each chapter's ``parameters``
cell.

Every invalid value raises ``ValueError`` naming the parameter and its allowed values,
before any data is loaded or any model is trained.
"""

from __future__ import annotations

from .. import attacks
from ..detectors.spectral_signatures import LAYERS, SCORINGS
from ..detectors.strip import BLENDS, THRESHOLD_RULES
from ..core.checks import (
    above_one,
    choice,
    device,
    integer,
    list_of,
    open_unit,
    positive,
    seed_target_pairs,
    silhouette,
)

#: The rule for every parameter any chapter may declare besides the attacks' own
#: parameters (``patch_size``, ``eps``, ...), which come from each attack's declaration.
RULES = {
    "seed": integer(0, 2**31 - 1),
    "target_label": integer(0, 9),
    "poison_rate": open_unit,
    "epochs": integer(1, 100),
    "n_train": integer(100, 54000, none_ok=True),
    "device": device,
    "attack": lambda name, value: choice(("none",) + attacks.names())(name, value),
    "soft_sigma": positive(10.0),
    "poison_rates": list_of(open_unit),
    "eps_values": list_of(positive(1.0)),
    "grid_eps_values": list_of(positive(1.0)),
    "noise_eps": positive(1.0),
    "grid_poison_rates": list_of(open_unit),
    "seeds": list_of(integer(0, 2**31 - 1)),
    "n_components": integer(2, 128),
    "reduction": choice(("ica", "pca")),
    "max_clusters": integer(2, 10),
    "reclassify_epochs": integer(1, 50),
    "n_clean_finetune": integer(100, 5000),
    "finetune_epochs": integer(1, 50),
    "max_val_drop": positive(1.0),
    "nc_steps": integer(1, 10000),
    "anomaly_threshold": positive(100.0),
    "robustness_runs": seed_target_pairs,
    "nc_runs": seed_target_pairs,
    "nc_budget_runs": seed_target_pairs,
    "nc_reference_steps": integer(1, 10000),
    "nc_reference_samples": integer(16, 5000),
    "nc_reference_multiplier": above_one(10.0),
    "matrix_runs": seed_target_pairs,
    "min_silhouette": silhouette,
    "size_threshold": open_unit,
    "ratio_threshold": positive(100.0),
    "nc_samples": integer(16, 5000),
    "nc_batch_size": integer(1, 1024),
    "ibau_rounds": integer(1, 100),
    "blend_alphas": list_of(open_unit),
    "sig_share": open_unit,
    "sig_shares": list_of(open_unit),
    "sig_deltas": list_of(positive(1.0)),
    "ramp_delta": positive(1.0),
    "ramp_shares": list_of(open_unit),
    "sig_test_factor": positive(10.0),
    "sig_runs": seed_target_pairs,
    "sig_min_asr": open_unit,
    "wanet_poison_rate": open_unit,
    "abl_poison_rate": open_unit,
    "wanet_epochs": integer(1, 100),
    "first_payload_rate": open_unit,
    "k": integer(1, 100000),
    "more_k": list_of(integer(1, 100000)),
    "dpa_epochs": integer(1, 10000),
    "dpa_hidden": integer(1, 4096),
    "dpa_batch_size": integer(1, 4096),
    "budgets": list_of(integer(0, 100000)),
    "ct_clean": integer(10, 5000),
    "ct_pretrain_epochs": list_of(integer(1, 1000)),
    "ct_iterations": list_of(integer(1, 100000)),
    "ss_epsilon": open_unit,
    "ss_layer": choice(LAYERS),
    "ss_scoring": choice(SCORINGS),
    "strip_blend": choice(BLENDS),
    "strip_threshold": choice(THRESHOLD_RULES),
    "trigger_lr_scales": list_of(positive(1000.0)),
    "strip_overlays": integer(1, 1000),
    "strip_frr": open_unit,
    "strip_inputs": integer(10, 9000),
    "min_asr": open_unit,
    "attacks": list_of(lambda name, value: choice(attacks.names())(name, value)),
}


def validate_parameters(**params) -> None:
    """Check every parameter against its rule (:data:`RULES`, and each registered
    attack's own).

    Raises ``ValueError`` for an unknown name (listing the known ones) or an invalid
    value.
    """
    rules = {**attacks.parameter_rules(), **RULES}
    for name, value in params.items():
        if name not in rules:
            raise ValueError(
                f"{name}: unknown parameter; known parameters are"
                f" {', '.join(sorted(rules))}"
            )
        rules[name](name, value)
