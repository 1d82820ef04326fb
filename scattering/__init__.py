"""Wavelet scattering + sparse dictionary classifiers (not yet implemented: see the scattering issue)."""
