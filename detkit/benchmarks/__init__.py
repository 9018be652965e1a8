"""Benchmarks (speed and memory), run by ``tools/benchmark_*.py``; never part of the tests."""
