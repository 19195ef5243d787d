"""Data: official preprocessing, unreadable files, dataset errors, synthetic determinism, sampler, configs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from harness_helpers import run_cli
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from harness.config import ConfigError, DataConfig, TrainConfig, from_dict
from harness.data.images import (
    DatasetError,
    GlobalBatchSampler,
    ImageFolderData,
    list_image_folder,
    preprocess,
)
from harness.data.synthetic import SyntheticImages, generate_image, write_imagefolder


def _gradient_image(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    return Image.fromarray(arr.astype(np.uint8))


def test_preprocess_matches_official_transform_chain():
    img = _gradient_image(80, 50)  # landscape: the shorter side (50) goes to round(1.125 * 32) = 36
    out = preprocess(img, 32, crop_seed=None)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1 and out.min() < -0.5 < 0.5 < out.max()
    resized = TF.resize(img, 36, interpolation=InterpolationMode.LANCZOS)
    assert resized.size == (57, 36)  # torchvision truncates 80 * 36 / 50
    expected = TF.to_tensor(TF.center_crop(resized, [32, 32])) * 2 - 1
    torch.testing.assert_close(out, expected)


def test_random_crop_is_seeded_window_of_resized_image():
    img = _gradient_image(64, 64)
    a, b, c = (preprocess(img, 32, crop_seed=s) for s in (1, 1, 2))
    torch.testing.assert_close(a, b)
    resized = TF.to_tensor(TF.resize(img, 36, interpolation=InterpolationMode.LANCZOS)) * 2 - 1
    windows = [resized[:, i:i + 32, j:j + 32] for i in range(5) for j in range(5)]
    assert any(torch.equal(a, w) for w in windows) and any(torch.equal(c, w) for w in windows)
    assert not all(torch.equal(preprocess(img, 32, crop_seed=s), a) for s in range(3, 10))


def test_synthetic_dataset_is_deterministic_and_class_dependent():
    a, la = generate_image(0, "train", 5, 32, 10)
    b, lb = generate_image(0, "train", 5, 32, 10)
    assert np.array_equal(a, b) and la == lb == 5
    assert not np.array_equal(a, generate_image(0, "train", 15, 32, 10)[0])  # same class, another sample
    assert not np.array_equal(a, generate_image(0, "val", 5, 32, 10)[0])  # the held-out split differs
    assert not np.array_equal(a, generate_image(1, "train", 5, 32, 10)[0])  # the seed matters
    assert generate_image(0, "train", 5, 48, 10)[0].shape == (48, 48, 3)  # any resolution
    ds = SyntheticImages("train", 40, 16, 4)
    img, label, unreadable = ds[6]
    assert img.shape == (3, 16, 16) and label == 2 and unreadable == 0 and -1 <= img.min() < img.max() <= 1
    # class-dependent distribution: per-class mean colours differ far more across classes than within one
    means = np.array([[generate_image(0, "train", k + 4 * i, 16, 4)[0].mean((0, 1)) for i in range(8)]
                      for k in range(4)])
    within = means.std(axis=1).mean()
    between = means.mean(axis=1).std(axis=0).mean()
    assert between > within


def test_write_imagefolder_round_trips_through_the_loader(tmp_path):
    root = write_imagefolder(tmp_path / "synth", num_classes=3, train_size=9, val_size=3, resolution=16)
    train = ImageFolderData(root, "train", 16, train=True)
    val = ImageFolderData(root, "val", 16, train=False, class_names=train.class_names)
    assert len(train) == 9 and len(val) == 3 and train.num_classes == 3
    img, label, bad = val[0]
    assert img.shape == (3, 16, 16) and bad == 0
    # written at 18 px (1.125 x 16), so the val transform is a plain centre crop of the written picture
    written = generate_image(0, "val", 0, 18, 3)[0]
    expected = torch.from_numpy(np.round(written * 255) / 255).permute(2, 0, 1)[:, 1:17, 1:17].float() * 2 - 1
    torch.testing.assert_close(img, expected, atol=1e-6, rtol=0)


def test_unreadable_image_is_reported_and_counted(tmp_path):
    root = write_imagefolder(tmp_path / "synth", num_classes=2, train_size=4, val_size=2, resolution=16)
    broken = sorted((root / "train" / "class_000").iterdir())[0]
    broken.write_bytes(b"this is not an image")
    ds = ImageFolderData(root, "train", 16, train=True)
    index = [p for p, _ in ds.samples].index(broken)
    with pytest.warns(UserWarning, match=str(broken)):
        img, label, unreadable = ds[index]
    assert unreadable == 1 and img.shape == (3, 16, 16)
    result = run_cli("data", "check", str(root))
    assert result.returncode == 1 and str(broken) in result.stdout


def test_missing_or_empty_dataset_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"missing/train: dataset directory not found"):
        list_image_folder(tmp_path / "missing" / "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        list_image_folder(tmp_path / "empty" / "train")
    (tmp_path / "empty" / "train" / "n01440764").mkdir()
    with pytest.raises(DatasetError, match="no images with extensions"):
        list_image_folder(tmp_path / "empty" / "train")
    result = run_cli("tokenize", "--tokenizer", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "c"))
    assert result.returncode == 2 and "none.safetensors not found" in result.stderr


def test_sampler_shards_global_batches_and_resumes():
    one = GlobalBatchSampler(50, 8, 1, 0, 1, seed=3)
    ranks = [GlobalBatchSampler(50, 8, 2, r, 2, seed=3) for r in range(2)]
    for step in (0, 5, 6, 13):  # 6 steps per epoch: crosses epochs
        keys_one = one.rank_micro_batches(step)[0]
        keys_two = [k for r in ranks for micro in r.rank_micro_batches(step) for k in micro]
        assert keys_one == keys_two and len(set(i for i, _ in keys_one)) == 8
    resumed = iter(GlobalBatchSampler(50, 8, 1, 0, 1, seed=3, start_step=7))
    assert next(resumed) == one.rank_micro_batches(7)[0]
    epoch0 = [i for s in range(6) for i, _ in one.rank_micro_batches(s)[0]]
    assert len(set(epoch0)) == 48  # no repeats within an epoch


def test_config_errors_name_the_option_and_allowed_values():
    with pytest.raises(ConfigError, match="unknown option data.resolutoin; allowed options: .*resolution"):
        from_dict(TrainConfig, {"data": {"resolutoin": 32}})
    with pytest.raises(ConfigError, match="precision='fp8' is not allowed; allowed values: 'auto', 'fp32'"):
        from_dict(TrainConfig, {"precision": "fp8", "tokenizer": {"path": "x"}}).validate()
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        from_dict(TrainConfig, {"batch_size": "64"})
    with pytest.raises(ConfigError, match="model_preset: unknown model name 'VAR-x'"):
        from_dict(TrainConfig, {"model_preset": "VAR-x", "tokenizer": {"path": "x"}}).validate()
    with pytest.raises(ConfigError, match="data.root is required"):
        DataConfig(source="imagefolder").validate()
    result = run_cli("train", "--run-dir", "/nonexistent/run", "--set", "bogus=1")
    assert result.returncode == 2 and "unknown option bogus" in result.stderr
