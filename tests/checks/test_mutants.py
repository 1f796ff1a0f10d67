"""The semantic mutants of tests/mutation still apply to the tree as it is.

Running the mutants takes most of an hour (docs/evidence.md); this takes a
moment, so a change that moves a mutant's target text fails here, in every
run, instead of when the mutants are next measured.
"""

from __future__ import annotations

import pytest

from tests.harness import PROJECT
from tests.mutation.mutants import MUTANTS, REQUIRED, Mutant


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_the_original_text_occurs_exactly_once(mutant: Mutant) -> None:
    text = (PROJECT / mutant.path).read_text(encoding="utf-8")
    assert text.count(mutant.original) == 1, f"{mutant.name}: update its original text in tests/mutation/mutants.py"


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_the_mutant_changes_the_code_and_says_what_it_breaks(mutant: Mutant) -> None:
    assert mutant.replacement != mutant.original
    assert mutant.rule.strip() and "\n" not in mutant.rule
    assert mutant.path.endswith(".py") and not mutant.path.startswith("tests/")


def test_the_names_are_unique_and_there_are_enough() -> None:
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names)
    assert len(names) >= 30


def test_the_classic_mistakes_are_all_there() -> None:
    names = {m.name for m in MUTANTS}
    assert [name for name in REQUIRED if name not in names] == []
