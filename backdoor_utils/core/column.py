"""A detector's or defense's place in the attack x defense matrix, declared by the
method itself: the orchestration, the matrix, its verdicts and the chapters read it from
the registry, so adding a method adds its column with no other edit."""

from __future__ import annotations

from dataclasses import dataclass

#: How one cell is computed (the orchestration has one function per kind): a detector
#: scored against the true poison flags (and the model retrained without what it
#: flagged), an input filter scored on test inputs, a repair of the model from the
#: defender's clean data, Neural Cleanse's repair of the labels it flags from its
#: reversed triggers, and a training-time defense that trains its own model on the
#: poisoned training set.
CELL_KINDS = ("detection", "screening", "repair", "reversal_repair", "training")


@dataclass(frozen=True)
class Column:
    """``metric``: the cell's main number (a key of the cell, or for a detection the
    score named ``score``); ``higher_is_better``: its direction for the defender;
    ``need``: what a defender needs of it (at least, or at most, by direction);
    ``title``: the column's name in figures (line breaks allowed); ``cell``: one of
    :data:`CELL_KINDS`."""

    metric: str
    higher_is_better: bool
    need: float
    title: str
    cell: str
    score: str = ""

    def __post_init__(self):
        if self.cell not in CELL_KINDS:
            raise ValueError(
                f"cell: must be one of {', '.join(map(repr, CELL_KINDS))}, got"
                f" {self.cell!r}"
            )
        if self.cell == "detection" and not self.score:
            raise ValueError("score: a detection column must name the score it reads")

    @property
    def name(self) -> str:
        """The title on one line ("fine-\\npruning" -> "fine-pruning")."""
        return self.title.replace("-\n", "-").replace("\n", " ")

    @property
    def label(self) -> str:
        """The heading in a figure: the title and, below it, the metric."""
        return f"{self.title}\n({self.metric})"

    def meets(self, value: float, need: float | None = None) -> bool:
        """Whether ``value`` is what a defender needs (``need`` overrides the
        column's)."""
        need = self.need if need is None else need
        return bool(value >= need) if self.higher_is_better else bool(value <= need)
