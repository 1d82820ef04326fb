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
#: CNNClassifier's per-family settings: width, batch_size, lr, loss, parameterization. Myrtle: the
#: paper's loss and He-initialized (standard) parameterization, lr and batch chosen on a held-out
#: quarter of the quickstart's training digits (docs/baselines.md); ResNet-9: Page's recipe.
CNN_ARCH_DEFAULTS: dict = {"myrtle": {"width": 64, "batch_size": 32, "lr": 0.1, "loss": "mse",
                                      "parameterization": "standard"},
                           "resnet9": {"width": 1.0, "batch_size": CNN_RECIPE["batch_size"],
                                       "lr": CNN_RECIPE["lr"], "loss": CNN_RECIPE["loss"],
                                       "parameterization": "standard"}}
#: the Myrtle networks' recipe of "Neural Kernels Without Tangents" as CNNClassifier keywords: MSE to
#: one-hot labels, standard parameterization, lr 0.1 (SGD Nesterov 0.9: CNN_RECIPE's momentum), weight
#: decay 5e-4, crop + flip + cutout, on images ZCA-whitened with bias CNN_PAPER_ZCA_BIAS
#: (tangentless.kernels.ZCAWhitening in front of the classifier). The paper trains CNN_PAPER_EPOCHS
#: epochs at width 2048 (Myrtle10); scaled to this library's CPU budget: width 64, 20 epochs, batch 32.
CNN_PAPER_RECIPE: dict = {"parameterization": "standard", "loss": "mse", "lr": 0.1, "weight_decay": 5e-4,
                          "augment": True, "width": 64, "epochs": 20, "batch_size": 32}
CNN_PAPER_ZCA_BIAS = 1e-4
CNN_PAPER_EPOCHS = 400

# --- Myrtle architectures (tangentless.kernels.architectures) -------------------------------------
#: conv + nonlinearity repeats per stage (three stages, pooled by 2 between them).
MYRTLE_STAGES = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}
#: the architecture names the estimators, experiments and CLI accept
MYRTLE_NAMES = tuple(f"myrtle{d}" for d in MYRTLE_STAGES)

# --- experiments (tangentless.benchmarks.experiments and the tangentless command) ------------------
#: each method's parameters in the experiments; every reduced budget is a field, so every report
#: states it (why these values: tangentless.benchmarks.experiments.methods). The networks' budgets
#: are CPU budgets: ``epochs`` passes over the training set, at least ``min_steps`` SGD steps (300
#: for the two networks: the Myrtle5 network fits 22% of 160 CIFAR training images in 100 steps and
#: 50% in 300, docs/baselines.md).
EXPERIMENT_PARAMS: dict = {
    "kernel": {"arch": "myrtle5", "flip": True, "zca_bias": 1e-5, "alphas": list(KERNEL_ALPHAS)},
    "scattering": {"J": 2, "alphas": list(SCATTERING_ALPHAS)},
    "cnn": {"arch": "myrtle5", "width": 32, "epochs": 30, "min_steps": 300, "batch_size": 32,
            "lr": 0.1, "loss": "mse", "augment": True},
    "resnet": {"arch": "resnet9", "width": 0.125, "epochs": 30, "min_steps": 300, "batch_size": 32,
               "lr": 0.1, "loss": "xent", "augment": True},
    "istc": {"J": 2, "projection": 64, "dictionary_size": 256, "n_iter": 4, "epochs": 30,
             "min_steps": 100, "batch_size": 32, "lr": 0.01},
}
#: the methods the experiments compare, in report order
METHODS = tuple(EXPERIMENT_PARAMS)
#: the small-data experiment: training-set sizes, trials per size, and its changes to
#: EXPERIMENT_PARAMS (ZCA bias for pools smaller than the pixel dimension: see small_data)
SMALL_DATA_SIZES: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640, 1280)
SMALL_DATA_TRIALS = 20
SMALL_DATA_PARAMS: dict = {"kernel": {"zca_bias": 1e-2}}
#: the architectures experiment (do network and kernel errors correlate across Myrtle5 / 7 / 10?):
#: the common n, the networks' trials on those n images, and its changes to EXPERIMENT_PARAMS and
#: SELECTION_GRIDS: kernels without flips (the paper's Myrtle5 / 7 / 10 comparison has none; it
#: halves the test rows), their ZCA bias by leave-one-out
ARCHITECTURES: dict = {"n": 160, "network_trials": 3, "params": {"kernel": {"flip": False}},
                       "grids": {"kernel": {"zca_bias": [1e-5, 1e-3, 1e-1]}}}
#: the quickstart: 600 class-balanced training and 600 class-balanced test digits
QUICKSTART: dict = {
    "train": 600, "test": 600, "seed": 0, "methods": ("kernel", "scattering", "cnn", "resnet"),
    "params": {"kernel": {"flip": False},   # mirror images of digits are not digits
               "scattering": {"J": 1},      # 8x8 images: J=2 would leave 2x2 maps
               "cnn": {"augment": False, "epochs": 20},
               "resnet": {"augment": False, "epochs": 20}},
}

# --- selection and cost (tangentless.benchmarks.experiments.selection, .full_data) ------------------
#: the hyperparameter grid each method searches on its training data only (the cartesian product of
#: the lists; the ridge methods' alphas are searched too, by exact leave-one-out, on top of these):
#: kernel ZCA bias x flips (each bias is one plain kernel matrix of the pool, flips on add its
#: mirror half), scattering J, the networks' peak lr x epochs at their fixed width (up to 100
#: epochs: on 160 CIFAR images the Myrtle5 network fits 22% of its training images in 15 epochs and
#: 86% in 120, docs/baselines.md), the ISTC model's lr
SELECTION_GRIDS: dict = {
    "kernel": {"zca_bias": [1e-5, 1e-3, 1e-1], "flip": [False, True]},
    "scattering": {"J": [1, 2]},
    "cnn": {"lr": [0.03, 0.1], "epochs": [30, 100]},
    "resnet": {"lr": [0.03, 0.1], "epochs": [30, 100]},
    "istc": {"lr": [0.003, 0.01, 0.03]},
}
#: the fraction of each class's training images held out to score a grid point (methods without
#: exact leave-one-out); the chosen values are then refitted on all training images
SELECTION_HOLDOUT_FRACTION = 0.25
#: the full-data experiment (accuracy against measured compute): the training-set sizes it measures
#: and its methods (scattering + ridge, an O(n^3) solve, is left out by default: "istc" is the
#: scattering model whose cost grows linearly in n)
FULL_DATA_SIZES: tuple[int, ...] = (250, 500, 1000)
FULL_DATA_METHODS: tuple[str, ...] = ("kernel", "istc", "cnn", "resnet")
