"""Second opinion through clean-fid 0.1.35: FID and KID in its ``clean`` and ``legacy_tensorflow`` modes.

clean-fid's network is NVIDIA's TorchScript ``inception-2015-12-05.pt`` (from StyleGAN2-ADA's metrics). Its
``build_feature_extractor`` hard-codes the folder ``/tmp`` on Linux and downloads the file there when it is missing,
so we do not call it: we build the same ``cleanfid.inception_torchscript.InceptionV3W`` ourselves with
``download=False`` and a folder we choose, then reuse clean-fid's resizer (``cleanfid.resize.build_resizer``),
``frechet_distance`` and ``kernel_distance``. The per-image steps mirror ``cleanfid.utils.ResizeDataset``.

* ``clean``: PIL bicubic resize to 299 per channel in float, outside the network -- a different metric from ADM's.
* ``legacy_tensorflow``: no resize outside; the TorchScript graph resizes itself (clean-fid: ~2e-5 from TTUR).
* ``legacy_pytorch`` is not offered: it needs pytorch-fid's separate weights through torch hub.

What each FID is compared against is part of its result (``compared_against``): by default the reference's
images (about 10,000 for ADM's batches), never the stored full-dataset statistics the headline FID uses, so it is
not comparable to the headline FID; ``against="stored-statistics"`` gives a comparable ``legacy_tensorflow`` FID.

KID uses clean-fid's ``kernel_distance``, which draws subsets with the global ``np.random``; we seed it with a
recorded seed and restore the global state afterwards, so KID is reproducible.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.evaluation.inception import varscale_cache_dir
from harness.sampling.npz import ImageSource
from models.files import sha256_file

WEIGHTS_FILENAME = "inception-2015-12-05.pt"
WEIGHTS_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + WEIGHTS_FILENAME
MODES = ("clean", "legacy_tensorflow")
FETCH_HINT = "varscale assets fetch --what inception-cleanfid"


def candidate_weight_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    dirs = []
    if os.environ.get("VARSCALE_CLEANFID_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["VARSCALE_CLEANFID_WEIGHTS_DIR"]).expanduser())
    return dirs + [varscale_cache_dir() / "cleanfid", Path("/tmp")]   # /tmp: where clean-fid itself keeps it


def find_weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    candidates = candidate_weight_dirs(explicit)
    for folder in candidates:
        if (folder / WEIGHTS_FILENAME).is_file():
            return folder
    looked = ", ".join(str(d / WEIGHTS_FILENAME) for d in candidates)
    raise FileNotFoundError(f"clean-fid's Inception file {WEIGHTS_FILENAME} not found (looked at: {looked}). "
                            f"Get it with `{FETCH_HINT}` on a machine with network, or pass --cleanfid-weights-dir.")


class CleanFidExtractor:
    def __init__(self, mode: str, weights_dir: str | os.PathLike | None = None, device: str | None = None):
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        from harness.distributed import default_device

        if mode not in MODES:
            raise ValueError(f"clean-fid mode {mode!r} not supported; expected one of {MODES}")
        self.mode = mode
        self.device = device or default_device()
        self.weights_dir = find_weights_dir(weights_dir)
        self.weights_path = self.weights_dir / WEIGHTS_FILENAME
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; clean-fid still uses it
            self.model = InceptionV3W(str(self.weights_dir), download=False,
                                      resize_inside=(mode == "legacy_tensorflow")).to(self.device).eval()
        self.resize = build_resizer(mode)

    def _to_tensor(self, image_HWC: np.ndarray):
        import torchvision

        resized = self.resize(image_HWC)
        # as cleanfid.utils.ResizeDataset: uint8 -> ToTensor()*255, float32 -> ToTensor() (no rescaling)
        if resized.dtype == np.uint8:
            return torchvision.transforms.functional.to_tensor(np.array(resized)) * 255
        return torchvision.transforms.functional.to_tensor(resized)

    def features(self, source: ImageSource, batch_size: int = 32, desc: str = "clean-fid") -> np.ndarray:
        import torch
        from tqdm import tqdm

        parts = []
        with tqdm(total=source.num_images, desc=f"{desc} ({self.mode})", unit="img", disable=None) as bar:
            for images in source.iter_batches(batch_size):
                batch = torch.stack([self._to_tensor(img) for img in images]).to(self.device)
                with torch.no_grad():
                    parts.append(self.model(batch).cpu().numpy())
                bar.update(len(images))
        return np.concatenate(parts)


def fid_kid(sample_features: np.ndarray, ref_features: np.ndarray, kid_seed: int = 0,
            fid_method: str = "sqrtm") -> dict:
    """FID with clean-fid's own ``frechet_distance`` (scipy sqrtm) unless another exact ``fid_method`` of
    ``harness.evaluation.fid`` is asked for (``gram`` is much faster for a few hundred images); KID as clean-fid."""
    from cleanfid.fid import frechet_distance, kernel_distance

    from harness.evaluation.fid import frechet_distance as our_frechet_distance

    mu1, sigma1 = sample_features.mean(0), np.cov(sample_features, rowvar=False)
    mu2, sigma2 = ref_features.mean(0), np.cov(ref_features, rowvar=False)
    if fid_method == "sqrtm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # clean-fid passes scipy's deprecated disp=
            fid = frechet_distance(mu1, sigma1, mu2, sigma2)
    else:
        fid = our_frechet_distance(mu1, sigma1, mu2, sigma2, fid_method, sample_features, ref_features)
    state = np.random.get_state()
    try:
        np.random.seed(kid_seed)
        kid = kernel_distance(sample_features, ref_features)
    finally:
        np.random.set_state(state)
    return {"fid": float(fid), "kid": float(kid), "kid_seed": kid_seed,
            "fid_code": "cleanfid.fid.frechet_distance" if fid_method == "sqrtm" else f"harness {fid_method}"}


CLEANFID_AGAINST = ("images", "stored-statistics")


def compared_against(reference: ImageSource, mode: str, against: str) -> dict:
    """What a clean-fid FID is measured against, for the result file, the CLI line and the report."""
    if against == "stored-statistics" and mode == "legacy_tensorflow":
        return {"fid_reference": "stored-statistics", "path": str(reference.path),
                "label": f"the reference's stored mu/sigma ({reference.path.name}), as the headline FID",
                "comparable_to_headline_fid": True}
    why = ("" if against == "images" else
           "; clean mode's PIL resize gives other features, so the stored (TF-graph) statistics do not apply")
    return {"fid_reference": "images", "path": str(reference.path), "num_images": reference.num_images,
            "label": f"the {reference.num_images} images of {reference.path.name}, not its stored statistics{why}",
            "comparable_to_headline_fid": False}


def evaluate_cleanfid(samples: ImageSource, reference: ImageSource, modes=MODES, weights_dir=None, device=None,
                      batch_size: int = 32, kid_seed: int = 0, fid_method: str = "sqrtm",
                      against: str = "images") -> dict:
    """Per mode: FID and KID and what they are compared against. ``against="stored-statistics"`` scores the
    ``legacy_tensorflow`` FID against the reference's stored mu/sigma (its network and resize are the TF graph's,
    so ADM's full-dataset statistics live in the same feature space); KID and ``clean`` mode always use the
    reference's images."""
    from harness.evaluation.fid import frechet_distance

    if against not in CLEANFID_AGAINST:
        raise ValueError(f"clean-fid reference {against!r}; expected one of {CLEANFID_AGAINST}")
    if reference.num_images == 0:
        raise ValueError(f"{reference.path}: clean-fid needs reference images ('arr_0'), not only statistics")
    out = {}
    for mode in modes:
        extractor = CleanFidExtractor(mode, weights_dir, device)
        sample_features = extractor.features(samples, batch_size, "samples")
        result = fid_kid(sample_features, extractor.features(reference, batch_size, "reference"), kid_seed,
                         fid_method)
        label = compared_against(reference, mode, against)
        if label["fid_reference"] == "stored-statistics":
            result["fid_vs_reference_images"] = result["fid"]
            result["fid"] = frechet_distance(sample_features.mean(0), np.cov(sample_features, rowvar=False),
                                             reference.stats["mu"], reference.stats["sigma"],
                                             fid_method, sample_features)
            result["fid_code"] = f"harness {fid_method} vs stored statistics"
        out[mode] = result | {"compared_against": label, "num_samples": samples.num_images,
                              "kid_compared_against": f"the {reference.num_images} images of {reference.path.name}",
                              "weights": str(extractor.weights_path.resolve()),
                              "weights_sha256": sha256_file(extractor.weights_path)}
    return out


# --- random weights with the NVIDIA TorchScript interface (tests and benchmarks) ---

def write_random_cleanfid_weights(folder: str | os.PathLike, inception_weights: str | os.PathLike) -> Path:
    """A TorchScript file with the interface clean-fid uses: ``.layers(x)`` on normalised 299x299 input giving
    (B, 2048, 1, 1), and ``forward(img, return_features)`` that resizes [0, 255] input itself. The trunk is
    torch-fidelity's architecture with the given (random) weights; NVIDIA's real file is their own port."""
    from harness.evaluation.inception import load_inception

    tf_model, _ = load_inception(inception_weights)
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
             "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"]
    trunk = torch.nn.Sequential(*[getattr(tf_model, n) for n in names]).float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        layers = torch.jit.trace(trunk, torch.zeros(1, 3, 299, 299))
        module = torch.jit.script(_TorchScriptInception(layers, tf_model.fc.float()))
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.jit.save(module, str(folder / WEIGHTS_FILENAME))
    return folder / WEIGHTS_FILENAME


def _tf1_bilinear_axis(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TF1 ``ResizeBilinear`` (align_corners=False, no half-pixel centres) along one axis: the source of target i
    is i * (n_in / n_out) in float32; its floor, the next index (clamped) and the fraction."""
    scale = torch.tensor(float(n_in), dtype=torch.float32) / torch.tensor(float(n_out), dtype=torch.float32)
    source = torch.arange(n_out, dtype=torch.float32, device=device) * scale.to(device)
    lower = torch.floor(source)
    upper = torch.clamp(lower + 1, max=float(n_in - 1))
    return lower.long(), upper.long(), source - lower


def resize_like_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) float32 to (B, C, size, size) as TF1's ResizeBilinear computes it: across first, then down."""
    y0, y1, fy = _tf1_bilinear_axis(x.shape[2], size, x.device)
    x0, x1, fx = _tf1_bilinear_axis(x.shape[3], size, x.device)
    top_left, top_right = x[:, :, y0][:, :, :, x0], x[:, :, y0][:, :, :, x1]
    bottom_left, bottom_right = x[:, :, y1][:, :, :, x0], x[:, :, y1][:, :, :, x1]
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    return top + (bottom - top) * fy[:, None]


class _TorchScriptInception(torch.nn.Module):
    def __init__(self, layers, fc):
        super().__init__()
        self.layers = layers
        self.output = fc

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = resize_like_tf1(img.to(torch.float32), 299)   # NVIDIA's file resizes as TF1 does (clean-fid: ~2e-5)
        features = self.layers((x - 128) / 128).reshape(-1, 2048)
        if return_features:
            return features
        return F.softmax(self.output(features), dim=1)
