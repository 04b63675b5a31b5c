"""The trainer's docstring examples run with the suite (``trainer/`` is not a testpath)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import trainer

MODULES = sorted(m.name for m in pkgutil.iter_modules(trainer.__path__, "trainer."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
