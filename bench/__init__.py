"""shazip's benchmarks (run with `pytest bench/ --benchmark-only`; see docs/benchmarks.md)."""
