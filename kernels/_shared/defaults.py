"""Every default the library and its experiments share, in one place. Modules import these names
rather than repeating the values."""
from __future__ import annotations

import numpy as np

# --- kernel ridge ----------------------------------------------------------------------------------
#: ridge alphas searched for compositional kernels (relative to the mean diagonal where the solver says)
KERNEL_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-8, -1, 8))
#: ridge alphas searched for scattering features (RBF or linear kernels of standardized features)
SCATTERING_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 1, 8))
