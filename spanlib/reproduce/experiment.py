"""One reproduction run: data, trained models (or their checkpoints) and the paper's tables.

`Experiment(profile)` is what both `python -m spanlib reproduce` and the book's notebooks use,
so a run of either gives the same tables. Everything goes under `<out>/<run name>/`:
`checkpoints/` (one file per model, written as soon as it is trained), `tables/` (CSV and JSON
with the profile, seed, versions and wall time) and `figures/` (PNG). The run name is the
profile's name, plus a hash of any size overrides, so runs of different profiles never share
files. A checkpoint whose configuration differs from the run's is reported, never trained over.
On the CPU, training, inpainting and sampling run with torch's deterministic algorithms (see
`deterministic_on_cpu`), so a second run with the same seed writes the same numbers.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
import uuid
import warnings
import zipfile
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..baselines import EBM, MAF, VAE, EBMConfig, MAFConfig, VAEConfig
from ..data import kmeans_clusters, load_profile_data
from ..evaluation import inpainting_mask, inpainting_mse, mse_summary, ood_metrics, score_dataset
from ..fit import fit_einet
from ..imaging import ImageCircuit, build_einet, build_span, images_to_variables
from ..span import SPAN, train_span
from .paper import MODEL_LABELS, PAPER_ROLE, PAPER_TABLE1, PAPER_TABLE2

OOD_MODELS = ("span", "ebm", "einet", "maf", "vae")
INPAINTING_MODELS = ("span", "einet", "ebm")
BASELINES = {"ebm": (EBM, EBMConfig), "maf": (MAF, MAFConfig), "vae": (VAE, VAEConfig)}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint on disk was written for another configuration than the current run's."""


def default_results_dir() -> Path:
    """Return `$SPANLIB_RESULTS`, or `results/` under the working directory."""
    return Path(os.environ.get("SPANLIB_RESULTS", "results"))


def with_overrides(profile, n_train: int | None = None, n_test: int | None = None, max_epochs: int | None = None):
    """Return a copy of `profile` with smaller data sets or epoch counts (for tests and trial runs)."""
    data, train = profile.data, profile.train
    if n_train is not None:
        data = dataclasses.replace(data, n_train=n_train)
    if n_test is not None:
        data = dataclasses.replace(data, n_test=n_test)
    if max_epochs is not None:
        epochs = {f.name: min(getattr(train, f.name), max_epochs) for f in dataclasses.fields(train) if f.name.endswith("epochs")}
        train = dataclasses.replace(train, **epochs)
    return dataclasses.replace(profile, data=data, train=train)


def _fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _atomic_save(save, path: Path) -> None:
    """Write through `save(tmp)` and rename, so an interrupted run never leaves half a file."""
    tmp = path.with_name(path.name + ".partial")
    save(tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_save(lambda tmp: tmp.write_text(text), path)


@contextmanager
def deterministic_on_cpu(device: torch.device):
    """Run the block with torch's deterministic algorithms on the CPU, then restore the previous setting.

    An indexed write with a repeated index (such as `tensor[indices] = values`) keeps whichever
    value a CPU thread writes last, so with several threads two trainings with the same seed can
    drift apart. The deterministic mode makes such writes, and any other op that has a
    deterministic variant, reproducible. It stays off on CUDA, where it would also need
    ``CUBLAS_WORKSPACE_CONFIG``, so GPU runs are not bit-reproducible.
    """
    if device.type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # warn_only: an op without a deterministic variant warns instead of ending the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class Experiment:
    """Data, models and tables of one profile.

    Args:
        profile: a `spanlib.profiles.Profile` (possibly from `with_overrides`).
        out: results root; defaults to `default_results_dir()`.
        files: local `.npz` files for data sets, passed to `load_profile_data`.
        data_root: download cache of the data sets; defaults to `spanlib.data.default_root()`.
        progress: show tqdm bars.
        baseline_max_epochs: cap on the epoch counts of the EBM, MAF and VAE baselines, whose
            settings come from their own `for_profile` configs rather than from `profile`.
    """

    def __init__(self, profile, out: str | Path | None = None, files: dict | None = None, progress: bool = True,
                 baseline_max_epochs: int | None = None, data_root: str | Path | None = None):
        from ..profiles import profile as named_profile

        if baseline_max_epochs is not None and baseline_max_epochs < 1:
            raise ValueError(f"baseline_max_epochs must be at least 1, got {baseline_max_epochs}")
        self.profile = profile
        self.files = files
        self.data_root = data_root
        self.progress = progress
        self.baseline_max_epochs = baseline_max_epochs
        self.device = profile.torch_device()
        reference = named_profile(profile.name).as_dict()
        settings = self.settings()
        self.run_name = profile.name if settings == reference else f"{profile.name}-{_fingerprint(settings)}"
        self.root = Path(out) if out is not None else default_results_dir()
        self.folder = self.root / self.run_name
        for sub in ("checkpoints", "tables", "figures"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._check_run_marker()
        self._models: dict[str, object] = {}

    # ------------------------------------------------------------------ bookkeeping
    def settings(self) -> dict:
        """Return the profile's settings, plus the baseline epoch cap when one is set."""
        settings = self.profile.as_dict()
        if self.baseline_max_epochs is not None:
            settings["baseline_max_epochs"] = self.baseline_max_epochs
        return settings

    def _check_run_marker(self) -> None:
        marker = self.folder / "profile.json"
        current = self.settings()
        if marker.exists():
            try:
                stored = json.loads(marker.read_text())
            except ValueError as error:
                raise CheckpointMismatchError(
                    f"{marker}, the configuration record of the results in {self.folder}, is corrupt ({error}). "
                    "Delete that folder to start again, or choose another --out folder."
                ) from error
            if stored != current:
                raise CheckpointMismatchError(
                    f"{self.folder} contains results of another configuration (see {marker}); "
                    "choose another --out folder or delete that one"
                )
        else:
            _atomic_write_text(marker, json.dumps(current, indent=2))

    def metadata(self, seconds: float) -> dict:
        """Return the provenance written next to every table."""
        return {
            "profile": self.profile.name,
            "run": self.run_name,
            "seed": self.profile.seed,
            "settings": self.settings(),
            "versions": _versions(),
            "device": str(self.device),
            "wall_seconds": round(seconds, 2),
        }

    def write_table(self, name: str, table, seconds: float) -> Path:
        """Write a DataFrame as `tables/<name>.csv` and `.json` (records plus metadata)."""
        csv = self.folder / "tables" / f"{name}.csv"
        _atomic_write_text(csv, table.to_csv(index=False))
        payload = {"metadata": self.metadata(seconds), "rows": _json_rows(table)}
        _atomic_write_text(csv.with_suffix(".json"), json.dumps(payload, indent=2, allow_nan=False))
        return csv

    def figure_path(self, name: str) -> Path:
        return self.folder / "figures" / f"{name}.png"

    # ------------------------------------------------------------------ data
    @cached_property
    def data(self):
        """The profile's `ProfileData` (train, test and OOD images)."""
        return load_profile_data(self.profile, root=self.data_root, files=self.files)

    @cached_property
    def cluster(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training and test images of one k-means cluster of the training set.

        Test images join the cluster whose mean is nearest, which is how k-means assigns new points.
        """
        c = self.profile.clusters
        labels = kmeans_clusters(self.data.train, c.num_clusters, seed=self.profile.seed)
        flat = self.data.train.flatten(1)
        means = torch.stack([flat[torch.from_numpy(labels == k)].mean(0) for k in range(c.num_clusters)])
        test_labels = torch.cdist(self.data.test.flatten(1), means).argmin(1).numpy()
        train = self.data.train[torch.from_numpy(labels == c.cluster_index)]
        test = self.data.test[torch.from_numpy(test_labels == c.cluster_index)]
        if len(test) == 0:
            fallback = min(len(self.data.test), 100)
            warnings.warn(
                f"no test image is nearest to cluster {c.cluster_index}; inpainting uses the first {fallback} "
                "test images of all clusters instead",
                RuntimeWarning,
                stacklevel=2,
            )
            test = self.data.test[:fallback]
        return train, test

    # ------------------------------------------------------------------ models
    def model(self, name: str, cluster: bool = False):
        """Return a trained model by name ("span", "einet", "ebm", "maf", "vae"), loading its checkpoint if present.

        Circuits come back as `ImageCircuit`s. With `cluster=True` the model is trained on one
        k-means cluster (for samples and inpainting).
        """
        key = f"{name}-cluster" if cluster else name
        if key in self._models:
            return self._models[key]
        if name not in OOD_MODELS:
            raise ValueError(f"unknown model {name!r}; expected one of {OOD_MODELS}")
        config = self._model_config(name)
        path = self.folder / "checkpoints" / f"{key}.pt"
        sidecar = path.with_suffix(".json")
        fingerprint = _fingerprint(config)
        if path.exists():
            if self._stored_fingerprint(path, sidecar) != fingerprint:
                raise CheckpointMismatchError(
                    f"checkpoint {path} was written for another configuration; delete it to retrain, "
                    "or use another --out folder"
                )
            model = self._load(name, path)
        else:
            images = self.cluster[0] if cluster else self.data.train
            start = time.perf_counter()
            with deterministic_on_cpu(self.device):
                model = self._train(name, images)
            # The sidecar goes first: a run interrupted between the two writes leaves a sidecar
            # without a checkpoint, and the next run retrains instead of rejecting an unlabelled file.
            # training_id makes every sidecar unique, so a retrained model never matches the stamp
            # of scores cached for the model it replaces, even when its training time is the same.
            record = {"fingerprint": fingerprint, "config": config,
                      "train_seconds": round(time.perf_counter() - start, 2), "training_id": uuid.uuid4().hex}
            _atomic_write_text(sidecar, json.dumps(record, indent=2))
            _atomic_save(self._save_function(model), path)
        self._models[key] = model
        return model

    def _model_config(self, name: str) -> dict:
        if name in BASELINES:
            return dataclasses.asdict(self._baseline_config(name))
        p = self.profile
        return {"data": dataclasses.asdict(p.data), "einet": dataclasses.asdict(p.einet), "train": dataclasses.asdict(p.train),
                "encoder": dataclasses.asdict(p.encoder) if name == "span" else None, "seed": p.seed}

    @staticmethod
    def _stored_fingerprint(path: Path, sidecar: Path) -> str:
        """Return the configuration fingerprint recorded next to checkpoint `path`."""
        if not sidecar.exists():
            raise CheckpointMismatchError(
                f"checkpoint {path} has no record of its configuration ({sidecar} is missing); "
                "delete the checkpoint to retrain"
            )
        try:
            return json.loads(sidecar.read_text())["fingerprint"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointMismatchError(
                f"{sidecar}, the configuration record of checkpoint {path}, is corrupt ({error!r}); "
                "delete both files to retrain"
            ) from error

    def _baseline_config(self, name: str):
        d = self.profile.data
        config_class = BASELINES[name][1]
        config = config_class.for_profile(self.profile.name, channels=d.channels, image_size=d.image_size)
        if self.baseline_max_epochs is not None:
            config = dataclasses.replace(config, epochs=min(config.epochs, self.baseline_max_epochs))
        return config

    def _train(self, name: str, images: torch.Tensor):
        p = self.profile
        torch.manual_seed(p.seed)
        if name in BASELINES:
            model = BASELINES[name][0](self._baseline_config(name)).to(self.device)
            model.fit(images, seed=p.seed, progress=self.progress)
            return model
        x = images_to_variables(images).to(self.device)
        einet = build_einet(p).to(self.device)
        einet.initialize_leaves(x, seed=p.seed)
        if name == "einet":
            fit_einet(einet, x, p.train.einet_em_epochs, batch_size=p.train.batch_size,
                      step_size=p.train.em_step_size, seed=p.seed, progress=self.progress)
            return self._circuit(einet)
        span = build_span(p, einet).to(self.device)
        train_span(span, x, p.train.warmup_epochs, p.train.coordinate_epochs, p.train.finetune_epochs,
                   batch_size=p.train.batch_size, em_step_size=p.train.em_step_size, lr=p.train.lr,
                   encoder_lr=p.train.encoder_lr, seed=p.seed, progress=self.progress)
        return self._circuit(span)

    def _circuit(self, model) -> ImageCircuit:
        d = self.profile.data
        return ImageCircuit(model, d.channels, d.image_size, d.image_size).eval()

    def _save_function(self, model):
        return (model.model if isinstance(model, ImageCircuit) else model).save

    def _load(self, name: str, path: Path):
        try:
            if name in BASELINES:
                return BASELINES[name][0].load(path, map_location=self.device)
            cls = SPAN if name == "span" else None
            from ..einet import EinsumNetwork

            model = (cls or EinsumNetwork).load(path, map_location=self.device)
        except ValueError as error:
            raise CheckpointMismatchError(f"cannot load the {name} model: {error}. Delete {path} to retrain it") from error
        return self._circuit(model)

    # ------------------------------------------------------------------ Table 1 and Figure 2
    def ood_scores(self, models=OOD_MODELS) -> dict[str, dict[str, np.ndarray]]:
        """Return model -> {"in-distribution" or OOD set name -> scores}, cached in tables/ood_scores.npz."""
        cache = self.folder / "tables" / "ood_scores.npz"
        stored = _read_score_cache(cache)
        scores: dict[str, dict[str, np.ndarray]] = {}
        sets = {"in-distribution": self.data.test, **self.data.ood}
        for name in models:
            model = self.model(name)
            # Scores are only reused for the checkpoint they were computed with: a model that was
            # deleted and retrained has a new sidecar, so its old scores are dropped.
            stamp_key, stamp = f"{name}/checkpoint", self._checkpoint_stamp(name)
            if str(stored.get(stamp_key, "")) != stamp:
                stored = {key: value for key, value in stored.items() if not key.startswith(f"{name}/")}
                stored[stamp_key] = np.array(stamp)
            scores[name] = {}
            for set_name, images in sets.items():
                key = f"{name}/{set_name}"
                if key not in stored:
                    stored[key] = score_dataset(model, images, name=MODEL_LABELS[name], progress=self.progress)
                scores[name][set_name] = stored[key]
            _atomic_save(lambda tmp: _write_npz(tmp, stored), cache)
        return scores

    def _checkpoint_stamp(self, key: str) -> str:
        """Return a hash of the sidecar of checkpoint `key`, which changes whenever the model is retrained."""
        sidecar = self.folder / "checkpoints" / f"{key}.json"
        return hashlib.sha256(sidecar.read_bytes()).hexdigest()[:12]

    def ood_table(self, models=OOD_MODELS):
        """Compute Table 1 (AUROC, AUPR, FPR95 per model and OOD set) beside the paper's AUROC; write it."""
        import pandas as pd

        start = time.perf_counter()
        scores = self.ood_scores(models)
        rows = []
        for name in models:
            for set_name in self.data.ood:
                metrics = ood_metrics(scores[name]["in-distribution"], scores[name][set_name], model=name)
                role = PAPER_ROLE.get(set_name)
                paper = PAPER_TABLE1[role][MODEL_LABELS[name]] if role else float("nan")
                rows.append({"model": MODEL_LABELS[name], "ood_set": set_name, "paper_set": role or "-",
                             **metrics, "paper_auroc": paper})
        table = pd.DataFrame(rows)
        self.write_table("ood", table, time.perf_counter() - start)
        return table

    # ------------------------------------------------------------------ Table 2 and Figure 4
    def inpainting(self, models=INPAINTING_MODELS, max_images: int | None = None):
        """Compute Table 2 (inpainting MSE of the top and left halves) on the cluster's test images; write it.

        Returns (table, reconstructions) where reconstructions maps (model, kind) to images.
        """
        import pandas as pd

        start = time.perf_counter()
        test = self.cluster[1] if max_images is None else self.cluster[1][:max_images]
        d = self.profile.data
        rows, reconstructions = [], {}
        for name in models:
            model = self.model(name, cluster=True)
            # The EBM fills pixels by Langevin dynamics on torch's global generator. Seeding after
            # `self.model`, which may have trained, gives the same images whether it trained or loaded.
            torch.manual_seed(self.profile.seed)
            for kind in ("top", "left"):
                mask = inpainting_mask(d.image_size, d.image_size, kind)
                with deterministic_on_cpu(self.device):
                    filled = _inpaint_batches(model, test.to(self.device), mask.to(self.device)).cpu()
                # The table's MSE averages over every pixel of the image, as the paper's Table 2 does;
                # the error over the missing half alone is about twice as large.
                whole = mse_summary(inpainting_mse(filled, test))
                missing = mse_summary(inpainting_mse(filled, test, mask.expand(len(test), d.channels, -1, -1)))
                paper_mean, paper_std = PAPER_TABLE2[(MODEL_LABELS[name], kind)]
                rows.append({"model": MODEL_LABELS[name], "missing": f"{kind} half", "mse_mean": whole["mean"],
                             "mse_std": whole["std"], "paper_mean": paper_mean, "paper_std": paper_std,
                             "missing_pixels_mse": missing["mean"], "images": len(test)})
                reconstructions[(name, kind)] = filled
        table = pd.DataFrame(rows)
        self.write_table("inpainting", table, time.perf_counter() - start)
        return table, reconstructions

    def samples(self, n: int = 16, models=INPAINTING_MODELS) -> dict[str, torch.Tensor]:
        """Draw n images from each cluster model (SPAN through its Einsum network; EBM from 0.5 grey)."""
        out = {}
        for name in models:
            model = self.model(name, cluster=True)
            # Seeded after `self.model`, which may have trained, for the same reason as in `inpainting`.
            torch.manual_seed(self.profile.seed)
            with deterministic_on_cpu(self.device):
                drawn = model.sample(n, seed=self.profile.seed) if isinstance(model, ImageCircuit) else model.sample(n)
            out[name] = drawn.detach().cpu().clamp(0, 1)
        return out

    # ------------------------------------------------------------------ Figure 1
    def weight_entropy(self, max_images: int = 200):
        """Mean entropy (nats) of the normalised sum weights per einsum layer, SPAN against the Einsum network; write it.

        SPAN's weights W^S(x) depend on the image, so its entropy is averaged over test images.
        """
        import pandas as pd

        start = time.perf_counter()
        span = self.model("span").model
        einet = self.model("einet").model
        x = images_to_variables(self.data.test[:max_images]).to(self.device)
        with torch.no_grad():
            span_weights = [w.cpu() for w in span.sum_weights(x)]
            einet_weights = [w.exp().cpu() for w in einet.log_weights()]
        rows = []
        for depth, (ws, we) in enumerate(zip(span_weights, einet_weights), start=1):
            k_pairs = ws.shape[-1] * ws.shape[-2]
            rows.append({"layer": depth, "partitions": ws.shape[1], "span_entropy": float(weight_entropy(ws).mean()),
                         "einet_entropy": float(weight_entropy(we).mean()), "uniform_entropy": float(np.log(k_pairs))})
        table = pd.DataFrame(rows)
        self.write_table("weight_entropy", table, time.perf_counter() - start)
        return table


def _json_rows(table) -> list[dict]:
    """Return the rows of a DataFrame as JSON-ready dicts, floats at full precision and NaN as None.

    `DataFrame.to_json` rounds floats to 10 decimal places, which loses digits of small MSE values.
    """
    rows = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


def _plain(value):
    """Return a NumPy scalar as the matching Python scalar, and any other value unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _versions() -> dict[str, str]:
    """Return the versions of Python and of the packages that compute the tables' numbers."""
    import sklearn

    return {"spanlib": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def weight_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Return the entropy (nats) of weights normalised over the last two dims (the K x K child pairs)."""
    p = weights.flatten(-2)
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def _read_score_cache(path: Path) -> dict[str, np.ndarray]:
    """Return the arrays of a score cache, or an empty dict when it is missing or unreadable (it is recomputed)."""
    if not path.exists():
        return {}
    try:
        with np.load(path) as archive:
            return dict(archive)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return {}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Through a file object, because np.savez appends ".npz" to a path that lacks it.
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _inpaint_batches(model, images: torch.Tensor, mask: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        batch_mask = mask.expand(len(batch), batch.shape[1], -1, -1)
        parts.append(model.inpaint(batch, batch_mask).detach())
    return torch.cat(parts)
