"""Every docstring example in the installed package runs: found by walking vigil's modules, so a new one is never left out."""
import doctest
import importlib
import pkgutil

import pytest

import vigil.models
import vigil.schemas
import vigil.streams


def _modules_with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    names = []
    for package in (vigil.models, vigil.schemas, vigil.streams):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            if any(test.examples for test in finder.find(module)):
                names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    # the detectors, scorers and formatters that document themselves with examples
    assert {"vigil.models.features", "vigil.models.edge", "vigil.models.falls", "vigil.streams.runtime.metrics",
            "vigil.streams.cli.alerts"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
