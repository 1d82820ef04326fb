"""Op codes of the fused CPU kernel's stage programs (rows of a program's ops table: code,
parameter, map slot), shared by :mod:`.fused_cpu` (which writes programs) and
:mod:`._fused_cpu_kernels` (which runs them)."""
CONV, RELU, GAUSSIAN, POLYNOMIAL, NORMALIZE = 0, 1, 2, 3, 4
