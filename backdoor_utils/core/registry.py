"""A name -> class registry, shared by the attacks, the detectors and the defenses."""

from __future__ import annotations

from dataclasses import fields, is_dataclass


class Registry:
    """Classes found by their ``name``: ``register`` (a class decorator), ``names`` and
    ``get``. ``check(cls)``, when given, vets a class before it is filed (raising
    ``ValueError``)."""

    def __init__(self, kind: str, check=None):
        self.kind, self.classes, self.check = kind, {}, check

    def register(self, cls):
        if not cls.name:
            raise ValueError(f"{self.kind} name: must be a non-empty name")
        if self.check is not None:
            self.check(cls)
        self.classes[cls.name] = cls
        return cls

    def names(self) -> tuple:
        return tuple(self.classes)

    def get(self, name: str, **params):
        """The {kind} called ``name`` built with ``params`` (its own parameters; an
        unknown one is refused by name)."""
        if name not in self.classes:
            raise ValueError(
                f"{self.kind}: must be one of {', '.join(map(repr, self.classes))}, got"
                f" {name!r}"
            )
        cls = self.classes[name]
        if is_dataclass(cls):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(params) - known)
            if unknown:
                raise ValueError(
                    f"{unknown[0]}: not a parameter of the {name!r} {self.kind}; its"
                    f" parameters are {', '.join(sorted(known)) or 'none'}"
                )
        return cls(**params)


def check_rules(obj) -> None:
    """Run ``obj.rules`` (parameter name -> check) on ``obj``'s values."""
    for name, check in obj.rules.items():
        check(name, getattr(obj, name))
