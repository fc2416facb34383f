"""Benchmarks: `make bench`. Targets live here, in the reports, never in timed test asserts."""
