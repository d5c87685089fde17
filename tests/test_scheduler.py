from __future__ import annotations

import pytest
from dask import delayed

from pipeline.errors import ConfigError
from workflows.scheduler import runner, validate


@pytest.mark.parametrize("spec", ["threads", "processes", "synchronous", "local:2",
                                  "tcp://127.0.0.1:8786"])
def test_valid_specs(spec):
    assert validate(spec) == spec


@pytest.mark.parametrize("spec", ["local", "local:0", "gpu", ""])
def test_invalid_specs(spec):
    with pytest.raises(ConfigError, match="local:N"):
        validate(spec)


def test_runner_reports_each_task():
    seen = []
    with runner("synchronous") as r:
        out = r.run([delayed(lambda x: x * 2)(i) for i in range(4)], seen.append)
    assert out == [0, 2, 4, 6]
    assert sorted(seen) == [0, 1, 2, 3]
