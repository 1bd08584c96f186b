import doctest
import importlib

import pytest

MODULES = ["models.features", "models.edge", "models.cloud", "models.alerts", "models.costs", "models.diagnosis", "models.trends",
           "streams.delivery", "streams.alerts_tail", "streams.demo_report"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
