"""The paper's reported numbers, and which of our data sets plays the role of each of its sets.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

# Table 1: AUROC of out-of-distribution detection, all models trained on SVHN.
PAPER_TABLE1 = {
    "cifar10": {"SPAN": 0.9270, "EBM": 0.8425, "EiNet": 0.9273, "MAF": 0.9517, "VAE": 0.9889},
    "mnist": {"SPAN": 0.9992, "EBM": 0.5416, "EiNet": 0.9989, "MAF": 0.9921, "VAE": 0.9296},
    "semeion": {"SPAN": 1.0000, "EBM": 0.8734, "EiNet": 1.0000, "MAF": 0.9965, "VAE": 0.9994},
}

# Table 2: inpainting MSE on the SVHN test set (pixels in [0, 1]), mean and standard deviation.
PAPER_TABLE2 = {
    ("SPAN", "top"): (8.76e-3, 6.84e-3),
    ("EiNet", "top"): (9.28e-3, 7.90e-3),
    ("EBM", "top"): (1.35e-2, 7.29e-3),
    ("SPAN", "left"): (6.73e-3, 5.29e-3),
    ("EiNet", "left"): (7.08e-3, 6.13e-3),
    ("EBM", "left"): (1.40e-2, 6.90e-3),
}

# The quick profile's offline sets stand in for the paper's OOD sets by kind: another digit
# source for MNIST, natural images for CIFAR-10 and binary images for Semeion. Faces have no
# counterpart in the paper.
PAPER_ROLE = {
    "cifar10": "cifar10",
    "mnist": "mnist",
    "semeion": "semeion",
    "photo-patches": "cifar10",
    "sklearn-digits": "mnist",
    "binary-patches": "semeion",
    "lfw-faces": None,
}

MODEL_LABELS = {"span": "SPAN", "ebm": "EBM", "einet": "EiNet", "maf": "MAF", "vae": "VAE"}
