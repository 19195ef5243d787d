"""Token cache: encode once, read ids back, refuse a cache of another tokenizer, train from it."""
from __future__ import annotations

import pytest
import torch
from harness_helpers import (
    learning_fields,
    make_tokenizer,
    records,
    tiny_run_config,
    write_run,
)

from harness.config import ConfigError, DataConfig, TokenizerRef
from harness.data.synthetic import SyntheticImages
from harness.data.token_cache import (
    TokenCacheData,
    check_compatible,
    encode_dataset,
    read_header,
)
from harness.tokenizer.storage import load_tokenizer
from harness.training.loop import train_run


def test_token_cache_round_trip(tmp_path, tokenizer):
    torch.set_num_threads(1)
    vae, ref = load_tokenizer(TokenizerRef(path=str(tokenizer)))
    data = DataConfig(synthetic_train_size=24, synthetic_val_size=8, num_classes=4)
    cache = encode_dataset(vae, ref, data, tmp_path / "cache", batch_size=10)
    header = read_header(cache)
    assert header["tokenizer"]["sha256"] == ref.sha256 and header["L"] == 30 and header["dtype"] == "uint16"
    assert header["splits"]["train"]["count"] == 24 and "centre crop" in header["view"]
    for split, size in (("train", 24), ("val", 8)):
        cached = TokenCacheData(cache, split)
        images = SyntheticImages(split, size, 32, 4)
        batch = torch.stack([images[i][0] for i in range(size)])
        expected = torch.cat(vae.img_to_idxBl(batch), dim=1)
        got = torch.stack([cached[i][0] for i in range(size)])
        assert torch.equal(got, expected)
        assert [cached[i][1] for i in range(size)] == [images[i][1] for i in range(size)]
        assert expected.unique().numel() > 5  # the comparison is not between constant maps
    check_compatible(header, cache, ref, data, vae.patch_nums)
    other = make_tokenizer(tmp_path / "other.safetensors", seed=1)
    _, other_ref = load_tokenizer(TokenizerRef(path=str(other)))
    with pytest.raises(ConfigError, match="made with tokenizer sha256"):
        check_compatible(header, cache, other_ref, data, vae.patch_nums)
    with pytest.raises(ConfigError, match="data.synthetic_seed is 0 there and 5 here"):
        check_compatible(header, cache, ref, DataConfig(**{**data.__dict__, "synthetic_seed": 5}), vae.patch_nums)
    with pytest.raises(ConfigError, match="already holds a token cache"):
        encode_dataset(vae, ref, data, cache)


def test_training_from_the_cache_equals_training_from_images(tmp_path, tokenizer):
    torch.set_num_threads(1)
    vae, ref = load_tokenizer(TokenizerRef(path=str(tokenizer)))
    base = tiny_run_config(tokenizer, total_steps=4, eval_every=2, checkpoint_every_steps=0)
    data = DataConfig(**base["data"])
    cache = encode_dataset(vae, ref, data, tmp_path / "cache", batch_size=32)
    from_images = write_run(tmp_path / "images", base)
    from_cache = write_run(tmp_path / "cached", tiny_run_config(tokenizer, total_steps=4, eval_every=2,
                                                                checkpoint_every_steps=0,
                                                                data={"token_cache": str(cache)}))
    train_run(from_images)
    train_run(from_cache)
    a, b = records(from_images), records(from_cache)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):  # synthetic images have no augmentation, so the tokens and the trajectory agree
        assert learning_fields(ra) == learning_fields(rb)


def test_cli_writes_synthetic_imagefolder_and_tokenizes_it(tmp_path, tokenizer):
    from harness_helpers import run_cli

    root = tmp_path / "synth"
    made = run_cli("data", "synth", "--out", str(root), "--classes", "2", "--train-size", "6", "--val-size", "2")
    assert made.returncode == 0, made.stderr
    assert len(list((root / "train").glob("class_*/*.png"))) == 6 and len(list((root / "val").glob("*/*.png"))) == 2
    cache = tmp_path / "cache"
    done = run_cli("tokenize", "--tokenizer", str(tokenizer), "--out", str(cache), "--set", "source=imagefolder",
                   "--set", f"root={root}", "--set", "num_classes=2")
    assert done.returncode == 0, done.stderr
    header = read_header(cache)
    assert header["data"]["source"] == "imagefolder" and header["splits"]["train"]["count"] == 6
    assert TokenCacheData(cache, "val")[1][0].shape == (30,)
    wrong = run_cli("tokenize", "--tokenizer", str(tokenizer), "--out", str(tmp_path / "c2"), "--set", "colour=1")
    assert wrong.returncode == 2 and "unknown option data.colour" in wrong.stderr
