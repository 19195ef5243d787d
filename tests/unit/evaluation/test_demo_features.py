"""The demo's synthetic feature network: deterministic, and its Frechet distance and precision tell held-out
images from degraded ones through the same evaluator functions as Inception FID."""
from __future__ import annotations

import numpy as np
import torch

from harness.evaluation.demo_features import (
    FeatureNetConfig,
    embed_images,
    load_or_train,
    synthetic_images,
    uint8_to_model_range,
)
from harness.evaluation.fid import feature_statistics, frechet_distance
from harness.evaluation.precision_recall import precision_recall

CFG = FeatureNetConfig(train_images=320, steps=40, batch_size=32, feature_dim=16)


def fd(a, b) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def test_feature_net_is_stored_reused_and_separates_real_from_degraded_images(tmp_path):
    torch.set_num_threads(1)
    net = load_or_train(tmp_path / "net", CFG)
    weights = (tmp_path / "net" / "feature_net.pt").read_bytes()
    again = load_or_train(tmp_path / "net", CFG)  # reused, not retrained
    assert (tmp_path / "net" / "feature_net.pt").read_bytes() == weights
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)

    real_a, labels_a = synthetic_images("val", 200, CFG)
    real_b, _ = synthetic_images("val", 200, CFG, first=200)
    blurred = torch.nn.functional.avg_pool2d(real_b, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    feats_a, predicted = embed_images(net, real_a)
    feats_b, _ = embed_images(net, real_b)
    feats_blur, _ = embed_images(net, blurred)
    assert feats_a.shape == (200, 16) and (predicted == labels_a).mean() > 0.5  # it learnt the classes
    assert fd(feats_b, feats_a) < 0.5 * fd(feats_blur, feats_a)
    precision_real, _ = precision_recall(feats_b, feats_a)
    precision_blur, _ = precision_recall(feats_blur, feats_a)
    assert precision_real > precision_blur + 0.2


def test_uint8_samples_map_to_the_training_range():
    images = np.array([[[[0, 255, 128]]]], dtype=np.uint8)  # one 1x1 NHWC image
    x = uint8_to_model_range(images)
    assert x.shape == (1, 3, 1, 1)
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]), atol=1e-6)  # x / 255 * 2 - 1
