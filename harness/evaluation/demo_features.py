"""A feature network for the demo's synthetic images: a small CNN classifier trained in seconds on the CPU.

Inception FID needs weights that a fresh clone without network does not have, and Inception features of 32 px
procedural pictures say little anyway. The demo therefore trains this network on the synthetic training images
(never on samples) and measures sample quality in its penultimate features through the same evaluator functions
as Inception FID (``fid.feature_statistics``, ``fid.frechet_distance``, ``precision_recall.precision_recall``).
Its numbers are labelled "synthetic-feature FD" everywhere: they are comparable between the sizes of one demo
study, never with an Inception FID. The classifier's accuracy on samples (does a sample show its class?) comes
with it.

Samples can only be as sharp as the tokenizer's decoder makes them, so the network is trained on, and the
reference is made of, the synthetic images as the tokenizer reconstructs them (encode -> tokens -> decode, rounded
to 8 bits like samples): the metric then measures the generator, not the tokenizer's blur, which would otherwise
dominate every size alike (measured: about 118 for all seven demo sizes against raw images).

The network, its training and the reference statistics are pure functions of the config below, the dataset
seed and the tokenizer; the weights are stored with the config hash so that a rerun reuses them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class FeatureNetConfig:
    resolution: int = 32
    num_classes: int = 10
    feature_dim: int = 64
    train_images: int = 4096
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    data_seed: int = 0  # the synthetic dataset's seed
    tokenizer_sha256: str | None = None  # images pass through this tokenizer (None: raw images)

    def to_dict(self) -> dict:
        return asdict(self)


class SyntheticFeatureNet(nn.Module):
    """conv(16) -> conv(32, /2) -> conv(32) -> conv(64, /2) -> conv(64) -> mean pool -> features -> logits."""

    def __init__(self, num_classes: int, feature_dim: int) -> None:
        super().__init__()
        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.SiLU())
        self.body = nn.Sequential(block(3, 16, 1), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2),
                                  block(64, 64, 1))
        self.features = nn.Linear(64, feature_dim)
        self.classify = nn.Linear(feature_dim, num_classes)

    def embed(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        """Features of images in [-1, 1]."""
        return self.features(self.body(images_B3HW).mean(dim=(2, 3)))

    def forward(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        return self.classify(torch.relu(self.embed(images_B3HW)))


def synthetic_images(split: str, count: int, cfg: FeatureNetConfig, first: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` synthetic images of ``split`` in [-1, 1] (B3HW) and their labels."""
    from harness.data.synthetic import generate_image

    pairs = [generate_image(cfg.data_seed, split, i, cfg.resolution, cfg.num_classes)
             for i in range(first, first + count)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).mul(2).sub(1)
    return images.contiguous(), np.array([p[1] for p in pairs], dtype=np.int64)


def tokenizer_round_trip(vae, batch_size: int = 128):
    """images in [-1, 1] -> the tokenizer's reconstruction from its tokens, rounded to 8 bits as samples are."""
    @torch.no_grad()
    def apply(images_B3HW: torch.Tensor) -> torch.Tensor:
        out = [vae.img_to_reconstructed_img(images_B3HW[i:i + batch_size], last_one=True)
               for i in range(0, len(images_B3HW), batch_size)]
        return torch.cat(out).add(1).mul(127.5).round().clamp(0, 255).div(127.5).sub(1)
    return apply


def train_feature_net(cfg: FeatureNetConfig, round_trip=None) -> tuple[SyntheticFeatureNet, dict]:
    """Train on the synthetic training split (random flips are not used: orientation is part of a class)."""
    torch.manual_seed(cfg.seed)
    images, labels = synthetic_images("train", cfg.train_images, cfg)
    if round_trip is not None:
        images = round_trip(images)
    labels_t = torch.from_numpy(labels)
    net = SyntheticFeatureNet(cfg.num_classes, cfg.feature_dim)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps)
    order = torch.Generator().manual_seed(cfg.seed)
    net.train()
    for _ in range(cfg.steps):
        batch = torch.randint(0, len(images), (cfg.batch_size,), generator=order)
        loss = nn.functional.cross_entropy(net(images[batch]), labels_t[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    return net, {"final_train_loss": float(loss.detach())}


@torch.no_grad()
def embed_images(net: SyntheticFeatureNet, images_B3HW: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(features N x D float64, predicted class N) for images in [-1, 1]."""
    feats, preds = [], []
    for start in range(0, len(images_B3HW), batch_size):
        chunk = images_B3HW[start:start + batch_size].float()
        f = net.embed(chunk)
        feats.append(f.double().numpy())
        preds.append(net.classify(torch.relu(f)).argmax(1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def uint8_to_model_range(images_NHWC: np.ndarray) -> torch.Tensor:
    """ADM-format uint8 samples (N, H, W, 3) to the network's input range [-1, 1] (B3HW)."""
    return torch.from_numpy(np.ascontiguousarray(images_NHWC)).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def load_or_train(folder: Path, cfg: FeatureNetConfig, round_trip=None) -> SyntheticFeatureNet:
    """The network stored in ``folder`` (weights + config), trained there first when missing; ``round_trip``
    (see tokenizer_round_trip) must belong to ``cfg.tokenizer_sha256``."""
    from models.files import atomic_target, save_json

    weights = folder / "feature_net.pt"
    if weights.is_file():
        net = SyntheticFeatureNet(cfg.num_classes, cfg.feature_dim)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return net.eval()
    folder.mkdir(parents=True, exist_ok=True)
    net, info = train_feature_net(cfg, round_trip)
    val_images, val_labels = synthetic_images("val", 512, cfg)
    if round_trip is not None:
        val_images = round_trip(val_images)
    _, predicted = embed_images(net, val_images)
    info["val_accuracy"] = float((predicted == val_labels).mean())
    save_json(folder / "feature_net.json", {"config": cfg.to_dict(), **info})
    with atomic_target(weights) as tmp:
        torch.save(net.state_dict(), tmp)
    return net
