"""torch-fidelity's TF-ported Inception-v3, loaded offline, with the three ADM evaluator feature sets.

The network is torch-fidelity 0.4.0's ``FeatureExtractorInceptionV3`` ("inception-v3-compat"): the TF 2015-12-05
graph ported op by op, with the TF1 bilinear resize to 299 and (x - 128) / 128 inside the forward, which is what
the ADM evaluator's graph does. It gives, per image:

* ``pool``    -- ``'2048'``: pool_3, used for FID and precision/recall;
* ``logits``  -- ``'logits_unbiased'``: pool_3 @ W without bias (1008 classes), the ADM ``softmax`` input for IS;
* ``spatial`` -- TF ``mixed_6/conv:0`` first 7 channels, flattened in TF's (H, W, C) order: 17*17*7 = 2023 values
  for sFID. torch-fidelity does not expose this layer. Its weight converter maps ``mixed_6/conv`` to
  ``Mixed_6d.branch1x1`` (conv + batchnorm + ReLU, the ReLU being the op TF names ``mixed_6/conv``), so we read the
  output of that module with a forward hook. The (H, W, C) flattening matters only when comparing against
  stored ``mu_s``/``sigma_s`` computed by the TF evaluator.

Weights: the file torch-fidelity downloads (``weights-inception-2015-12-05-6726825d.pth``, a plain ``dict`` of
tensors written by ``torch.save``, without BatchNorm ``num_batches_tracked`` entries). We look for it, in order:
an explicit path, ``$VARSCALE_INCEPTION_WEIGHTS``, the varscale asset cache, and torch hub's checkpoint folder
(where torch-fidelity itself caches it). Nothing is downloaded here; ``varscale assets fetch --what inception``
does that on a machine with network.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILENAME
# torch hub names files <name>-<first hex digits of sha256>.<ext>; torch-fidelity kept that convention.
WEIGHTS_SHA256_PREFIX = "6726825d"
FEATURE_EXTRACTOR_NAME = "inception-v3-compat"
SPATIAL_MODULE = "Mixed_6d.branch1x1"
SPATIAL_CHANNELS = 7
FETCH_HINT = "varscale assets fetch --what inception"


class InceptionWeightsError(FileNotFoundError):
    """The Inception weights file is missing or is not torch-fidelity's state dict."""


def varscale_cache_dir() -> Path:
    """Where ``varscale assets fetch`` puts downloads: ``$VARSCALE_CACHE`` or ``~/.cache/varscale``."""
    return Path(os.environ.get("VARSCALE_CACHE", Path.home() / ".cache" / "varscale")).expanduser()


def candidate_weight_paths(explicit: str | os.PathLike | None = None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    paths = []
    if os.environ.get("VARSCALE_INCEPTION_WEIGHTS"):
        paths.append(Path(os.environ["VARSCALE_INCEPTION_WEIGHTS"]).expanduser())
    paths.append(varscale_cache_dir() / "inception" / WEIGHTS_FILENAME)
    import torch.hub

    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME)
    return paths


def find_weights(explicit: str | os.PathLike | None = None) -> Path:
    candidates = candidate_weight_paths(explicit)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise InceptionWeightsError(
        f"Inception weights file {WEIGHTS_FILENAME} not found (looked at: {looked}). "
        f"Get it on a machine with network with `{FETCH_HINT}` (it downloads {WEIGHTS_URL} into "
        f"{varscale_cache_dir() / 'inception'}), or pass its path with --inception-weights."
    )


def _load_state_dict(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download or a file that is not a torch checkpoint
        raise InceptionWeightsError(f"{path}: cannot be read as a torch state dict ({exc}); "
                                    f"re-download it with `{FETCH_HINT}`") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsError(f"{path}: expected a dict of tensors (torch-fidelity's {WEIGHTS_FILENAME})")
    return state


def load_inception(weights: str | os.PathLike | None = None, device: str = "cpu", dtype: str = "float32"):
    """Build torch-fidelity's Inception and load the weights strictly (every key present, no extra key).

    Returns ``(model, weights_path)``. The state dict is read once with ``weights_only=True`` to validate it
    (torch-fidelity's own constructor reads it again without that guard; by then we know it is plain tensors).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = find_weights(weights)
    _load_state_dict(path)
    try:
        model = FeatureExtractorInceptionV3(
            FEATURE_EXTRACTOR_NAME, ["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(path), feature_extractor_internal_dtype=dtype,
        )
    except RuntimeError as exc:  # strict load_state_dict: missing/unexpected keys or wrong shapes
        raise InceptionWeightsError(f"{path}: does not match torch-fidelity's Inception-v3 layout: {exc}") from exc
    return model.to(device), path


@dataclass
class InceptionFeatures:
    pool: np.ndarray      # (N, 2048) float32, FID / precision / recall
    spatial: np.ndarray   # (N, 2023) float32, sFID
    logits: np.ndarray    # (N, 1008) float32, IS (softmax taken later)

    def __len__(self) -> int:
        return len(self.pool)


class InceptionExtractor:
    """Runs uint8 NHWC batches through the network; collects pool / spatial / logits features."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str | None = None,
                 dtype: str = "float32"):
        from harness.distributed import default_device

        self.device = device or default_device()
        self.model, self.weights_path = load_inception(weights, self.device, dtype)
        self._spatial = None
        self.model.get_submodule(SPATIAL_MODULE).register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output_BCHW) -> None:
        # TF flattens NHWC: (17, 17, 7) -> 2023, channel fastest
        self._spatial = output_BCHW[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1).float()

    def batch(self, images_BHWC: np.ndarray) -> InceptionFeatures:
        import torch

        x_BCHW = torch.from_numpy(np.array(images_BHWC, dtype=np.uint8))  # a copy: npz rows are read-only
        x_BCHW = x_BCHW.to(self.device).permute(0, 3, 1, 2)
        with torch.no_grad():
            pool, logits = self.model(x_BCHW)
        return InceptionFeatures(pool.cpu().numpy(), self._spatial.cpu().numpy(), logits.cpu().numpy())

    def run(self, batches: Iterable[np.ndarray], total: int | None = None,
            desc: str = "inception") -> InceptionFeatures:
        from tqdm import tqdm

        parts = []
        with tqdm(total=total, desc=desc, unit="img", disable=None) as bar:
            for images in batches:
                parts.append(self.batch(images))
                bar.update(len(images))
        if not parts:
            raise ValueError("no images to extract features from")
        fields = ("pool", "spatial", "logits")
        return InceptionFeatures(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def iter_chunks(array: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(array), batch_size):
        yield array[start:start + batch_size]


# --- random weights in the real file's format (tests and benchmarks; no real weights can be downloaded here) ---

def _inception_layout():
    """An empty module with torch-fidelity's Inception submodule names and shapes (its constructor needs weights)."""
    import torch.nn as nn
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    m = nn.Module()
    m.Conv2d_1a_3x3 = tfi.BasicConv2d(3, 32, kernel_size=3, stride=2)
    m.Conv2d_2a_3x3 = tfi.BasicConv2d(32, 32, kernel_size=3)
    m.Conv2d_2b_3x3 = tfi.BasicConv2d(32, 64, kernel_size=3, padding=1)
    m.Conv2d_3b_1x1 = tfi.BasicConv2d(64, 80, kernel_size=1)
    m.Conv2d_4a_3x3 = tfi.BasicConv2d(80, 192, kernel_size=3)
    m.Mixed_5b = tfi.InceptionA(192, pool_features=32)
    m.Mixed_5c = tfi.InceptionA(256, pool_features=64)
    m.Mixed_5d = tfi.InceptionA(288, pool_features=64)
    m.Mixed_6a = tfi.InceptionB(288)
    m.Mixed_6b = tfi.InceptionC(768, channels_7x7=128)
    m.Mixed_6c = tfi.InceptionC(768, channels_7x7=160)
    m.Mixed_6d = tfi.InceptionC(768, channels_7x7=160)
    m.Mixed_6e = tfi.InceptionC(768, channels_7x7=192)
    m.Mixed_7a = tfi.InceptionD(768)
    m.Mixed_7b = tfi.InceptionE_1(1280)
    m.Mixed_7c = tfi.InceptionE_2(2048)
    m.fc = nn.Linear(2048, 1008)
    return m


def _synthetic_images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random colour fields: varied enough that batchnorm calibration sees a spread of inputs."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, 4, 4, 3))
    fine = np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)
    return np.clip(fine + rng.normal(0, 20, size=fine.shape), 0, 255).astype(np.uint8)


def random_inception_state_dict(seed: int = 0, calibration_images: int = 6) -> dict:
    """Random weights with informative features.

    He-initialised convs alone let activations collapse onto one direction through the 90-odd layers (every
    image gets nearly the same pool_3 vector). So, like a data-dependent init, we then set every batchnorm's
    running statistics to those of a small batch of synthetic images (a train-mode pass with cumulative
    averaging) and scale the classifier so that its softmax is far from uniform.
    """
    import tempfile

    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in _inception_layout().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # the converted TF weights have none
        shape = tensor.shape
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.endswith("bn.weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("running_var"):
            value = torch.ones(shape)
        elif key.endswith("bias") or key.endswith("running_mean"):
            value = 0.1 * torch.randn(shape, generator=gen)
        else:  # fc.weight
            value = torch.randn(shape, generator=gen) / shape[1] ** 0.5
        state[key] = value.float().contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / WEIGHTS_FILENAME)
        model = FeatureExtractorInceptionV3(FEATURE_EXTRACTOR_NAME, ["2048"],
                                            feature_extractor_weights_path=str(Path(tmp) / WEIGHTS_FILENAME))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass sets the batch statistics
    model.train()
    images = torch.from_numpy(_synthetic_images(calibration_images, 32, seed)).permute(0, 3, 1, 2)
    with torch.no_grad():
        (pool,) = model(images)
    calibrated = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    # centre the pool features for the classifier and give logits a spread of about 3
    centred = pool - pool.mean(0)
    calibrated["fc.weight"] = calibrated["fc.weight"] * 3.0 / (centred @ calibrated["fc.weight"].T).std()
    calibrated["fc.bias"] = -(pool.mean(0) @ calibrated["fc.weight"].T)
    return calibrated


def write_random_inception_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save random weights exactly as torch-fidelity's converter saves the real ones: ``torch.save(dict)``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_inception_state_dict(seed), path)
    return path
