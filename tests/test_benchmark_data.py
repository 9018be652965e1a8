import pytest

from detkit.benchmarks.data import DataBenchConfig, _in_fresh_process


def test_a_failing_measurement_is_raised_not_waited_for(tmp_path):
    """The data benchmark builds each loader in a spawned process; an error there (here a
    missing annotation file) reaches the caller instead of leaving it blocked on the queue."""
    with pytest.raises(RuntimeError, match="measuring process for 'new' failed: .*missing.json"):
        _in_fresh_process("new", str(tmp_path), str(tmp_path / "missing.json"),
                          DataBenchConfig(scale=0.001))
