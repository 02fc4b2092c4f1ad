"""The mutants of ``make mutants`` stay current: each still finds the code it breaks."""

from pathlib import Path

import pytest

from tests.mutants import MUTANTS, module_text

UNIT = Path(__file__).resolve().parent


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_breaks_code_that_is_there_once_and_names_tests_that_exist(mutant):
    assert (
        module_text(mutant).count(mutant.original) == 1
    ), f"{mutant.module} changed: update tests/mutants.py"
    assert mutant.broken != mutant.original
    assert mutant.tests and all((UNIT / name).is_file() for name in mutant.tests)


def test_mutant_names_are_unique():
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
