"""Every default the library and its experiments share, in one place. Modules import these names
rather than repeating the values."""
from __future__ import annotations

import numpy as np

# --- kernel ridge ----------------------------------------------------------------------------------
#: ridge alphas searched for compositional kernels (relative to the mean diagonal where the solver says)
KERNEL_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-8, -1, 8))
#: ridge alphas searched for scattering features (RBF or linear kernels of standardized features)
SCATTERING_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 1, 8))

# --- CNN baselines (tangentless.benchmarks.cnn) ------------------------------------------------------
#: the training recipe, D. Page's ResNet-9 with 10 epochs: CNNTrainConfig's defaults
CNN_RECIPE: dict = {"epochs": 10, "batch_size": 512, "lr": 0.4, "momentum": 0.9, "nesterov": True,
                    "weight_decay": 5e-4, "warmup": 0.2, "loss": "xent", "label_smoothing": 0.2,
                    "augment": True, "crop_padding": 4, "cutout": 8, "eval_batch_size": 512}
#: CNNClassifier's per-family settings: width, batch_size, lr, loss (Myrtle: the paper's loss, lr for
#: kernel_network's NTK parameterization; ResNet-9: Page's recipe)
CNN_ARCH_DEFAULTS: dict = {"myrtle": {"width": 64, "batch_size": 128, "lr": 1.0, "loss": "mse"},
                           "resnet9": {"width": 1.0, "batch_size": CNN_RECIPE["batch_size"],
                                       "lr": CNN_RECIPE["lr"], "loss": CNN_RECIPE["loss"]}}
