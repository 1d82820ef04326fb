"""Datasets, benchmarks and the `tangentless` command line."""
