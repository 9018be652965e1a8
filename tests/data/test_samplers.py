import pytest

from detkit.data.samplers import EpochSeededSampler


def test_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    data = range(10)
    sampler = EpochSeededSampler(data, seed=3)
    first = list(sampler)
    assert sorted(first) == list(data)
    assert list(EpochSeededSampler(data, seed=3)) == first  # no global RNG involved
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(data)
    sampler.resume_at(epoch=1, batches=2, batch_size=3)
    sampler.set_epoch(5)  # Lightning's count does not override the resume position
    assert list(sampler) == second[6:]
    assert list(sampler) == sampler.permutation(5)  # one pass only, then the set epoch
    with pytest.raises(ValueError, match="batch_size >= 1"):
        sampler.resume_at(0, 1, 0)
