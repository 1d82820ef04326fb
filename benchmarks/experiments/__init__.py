"""The experiments of the benchmark: small-data regime (the kernel paper's protocol), full-data
comparison with cost projections, and generalization to re-collected test sets. Each writes JSON,
a Markdown table and plots through :mod:`tangentless.benchmarks.report`."""
