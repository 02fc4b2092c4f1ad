"""A name -> class registry, shared by the detectors and the defenses."""

from __future__ import annotations


class Registry:
    """Classes found by their ``name``: ``register`` (a class decorator), ``names`` and
    ``get``."""

    def __init__(self, kind: str):
        self.kind, self.classes = kind, {}

    def register(self, cls):
        if not cls.name:
            raise ValueError(f"{self.kind} name: must be a non-empty name")
        self.classes[cls.name] = cls
        return cls

    def names(self) -> tuple:
        return tuple(self.classes)

    def get(self, name: str, **params):
        """The {kind} called ``name`` built with ``params``."""
        if name not in self.classes:
            raise ValueError(
                f"{self.kind}: must be one of {', '.join(map(repr, self.classes))}, got"
                f" {name!r}"
            )
        return self.classes[name](**params)


def check_rules(obj) -> None:
    """Run ``obj.rules`` (parameter name -> check) on ``obj``'s values."""
    for name, check in obj.rules.items():
        check(name, getattr(obj, name))
