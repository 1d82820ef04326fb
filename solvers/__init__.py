"""Kernel ridge solvers (not yet implemented: see the solvers issue)."""
