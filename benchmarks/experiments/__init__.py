"""The experiments of the benchmark: small-data regime (the kernel paper's protocol), accuracy
against measured compute with a projection to the full data set, and generalization to
re-collected test sets. Every method selects its hyperparameters on its training data only
(:mod:`.selection`). Each writes JSON, a Markdown table and plots through
:mod:`tangentless.benchmarks.report`."""
