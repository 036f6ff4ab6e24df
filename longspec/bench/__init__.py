"""Benchmarks: end-to-end method comparison (e2e) and at-scale kernels/steps."""
