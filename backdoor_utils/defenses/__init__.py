"""Defenses, one module each, without knowledge of the trigger: the model repairs
fine-pruning (:mod:`.fine_pruning`, Liu et al. 2018, with the original study's fc-layer
pruning), Neural Cleanse (:mod:`.neural_cleanse`, Wang et al. 2019) and I-BAU
(:mod:`.ibau`, Zeng et al. 2022), on clean data only, and Anti-Backdoor Learning
(:mod:`.abl`, Li et al. 2021), which trains on the poisoned set with no clean data.
``defenses.get("fine_pruning")`` builds one by name; the functions of each method are
re-exported here.
"""

from .base import (
    REGISTRY,
    DefenderData,
    Defense,
    Measure,
    Repair,
    SharedConvMetrics,
    accuracy,
    defender_data,
    defense_metrics,
    get,
    names,
    register,
)
from .fine_pruning import (
    FinePruning,
    channel_ranking,
    choose_fc_amount,
    choose_prune_count,
    fc_pruned,
    fine_tune,
    mean_channel_activation,
    pruned,
    pruning_curve,
    validation_curve,
)
from .neural_cleanse import (
    CleanseReport,
    NeuralCleanse,
    ReversedTrigger,
    anomaly_indices,
    cleanse_report,
    neural_cleanse,
    neural_cleanse_at,
    pack_reversed,
    reverse_engineer_trigger,
    reverse_engineer_triggers,
    unlearn,
    unpack_reversed,
)

# after the first two repairs, so that the matrix lists their columns first
from .ibau import IBAU, implicit_hypergradient, universal_perturbation  # noqa: E402
from .abl import ABL, lga_loss, lowest_loss, per_image_loss  # noqa: E402

__all__ = [
    "ABL",
    "IBAU",
    "REGISTRY",
    "CleanseReport",
    "DefenderData",
    "Defense",
    "FinePruning",
    "Measure",
    "NeuralCleanse",
    "Repair",
    "ReversedTrigger",
    "SharedConvMetrics",
    "accuracy",
    "anomaly_indices",
    "channel_ranking",
    "choose_fc_amount",
    "choose_prune_count",
    "cleanse_report",
    "defender_data",
    "defense_metrics",
    "fc_pruned",
    "fine_tune",
    "get",
    "implicit_hypergradient",
    "lga_loss",
    "lowest_loss",
    "mean_channel_activation",
    "names",
    "neural_cleanse",
    "neural_cleanse_at",
    "pack_reversed",
    "per_image_loss",
    "pruned",
    "pruning_curve",
    "register",
    "reverse_engineer_trigger",
    "reverse_engineer_triggers",
    "universal_perturbation",
    "unlearn",
    "unpack_reversed",
    "validation_curve",
]
