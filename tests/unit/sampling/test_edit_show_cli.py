"""varscale edit and varscale show end to end on a tiny random VAR on CPU: PNG in, grid PNG out."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sampling_kit import make_tiny_run

from harness.cli.main import main
from harness.data.images import preprocess
from harness.data.synthetic import SyntheticImages, generate_image
from harness.sampling.edit import write_inpaint_example
from harness.sampling.grid import CAPTION_H, GAP, LABEL_W, MIN_TILE
from harness.sampling.load import load_run_model
from harness.sampling.loop import to_uint8
from models.edit import box_edit_mask

SAMPLING = ["--top-k", "40", "--top-p", "0.9", "--cfg", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)   # the commands pin 1 thread (--cpu-threads); direct calls here must match bytes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def var(run_dir):
    return load_run_model(run_dir, "cpu")[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 48x40 (W x H) RGB PNG: not square and not the model's 32 px, so resize and centre crop both act."""
    img, _ = generate_image(0, "val", 3, 48, 10)
    path = tmp_path_factory.mktemp("in") / "photo.png"
    Image.fromarray((img[4:44] * 255).round().astype(np.uint8)).save(path)
    return path


def tile(png_path, row: int, col: int, side: int = 32, left: int = 0, top: int = CAPTION_H) -> np.ndarray:
    """One image of a grid, back at its own resolution (small tiles were enlarged with nearest-neighbour)."""
    size = max(side, MIN_TILE)
    grid = np.asarray(Image.open(png_path).convert("RGB"))
    y, x = top + GAP + row * (size + GAP), left + GAP + col * (size + GAP)
    return grid[y:y + size:size // side, x:x + size:size // side]


def test_edit_grid_holds_the_models_masked_samples_and_is_byte_identical_per_seed(run_dir, var, photo, tmp_path):
    argv = ["edit", str(photo), "--run", str(run_dir), "--box", "0.25,0.5,0.75,1", "--count", "3", "--seed", "7",
            *SAMPLING]
    assert main([*argv, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert main([*argv[:-len(SAMPLING) - 2], "--seed", "8", *SAMPLING, "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()

    with Image.open(photo) as source:
        image = preprocess(source, 32, crop_seed=None).unsqueeze(0)
    keep = box_edit_mask(var.patch_nums, (0.25, 0.5, 0.75, 1), inpainting=True)
    tokens = [ids.expand(3, -1) for ids in var.vae_proxy[0].img_to_idxBl(image)]
    expected = var.autoregressive_infer_cfg_with_mask(3, torch.full((3,), 10), g_seed=7, cfg=2, top_k=40, top_p=0.9,
                                                      input_img_tokens=tokens, edit_mask=keep)
    for i, want in enumerate(to_uint8(expected)):
        np.testing.assert_array_equal(tile(tmp_path / "a.png", 0, 3 + i), want)
    np.testing.assert_array_equal(tile(tmp_path / "a.png", 0, 0), to_uint8(image.add(1).div(2))[0])
    overlay = tile(tmp_path / "a.png", 0, 1).astype(int)
    assert overlay[8:24, 16:32, 0].min() > overlay[8:24, 16:32, 1].max() - 1   # the in-painted box is tinted red
    assert np.array_equal(overlay[:8], tile(tmp_path / "a.png", 0, 0)[:8])      # the kept rows are not

    record = json.loads((tmp_path / "a.png.json").read_text())
    assert record["mode"] == "inpaint" and record["label"] == 10 and record["sampling"]["seed"] == 7
    assert record["keep_mask"] == keep.int().tolist() and record["region"] == {"box": [0.25, 0.5, 0.75, 1.0]}
    assert record["model"]["checkpoints"]["var"]["sha256"] and record["image"]["size"] == [48, 40]


def test_edit_modes_and_a_mask_image(run_dir, photo, tmp_path):
    mask = np.zeros((40, 48), np.uint8)
    mask[:, :24] = 255   # the left half of the photo: after resize and crop, the left two token columns
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = [str(photo), "--run", str(run_dir), "--count", "2", *SAMPLING]
    assert main(["edit", *common, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "m.png")]) == 0
    assert main(["edit", *common, "--box", "0,0,1,0.5", "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "m.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert main(["edit", *common, "--box", "0,0,1,0.5", "--mode", "outpaint", "--out", str(tmp_path / "o.png")]) == 0
    assert main(["edit", *common, "--box", "0,0,1,0.5", "--mode", "class", "--class", "3", "--more-smooth",
                 "--out", str(tmp_path / "c.png")]) == 0
    records = {name: json.loads((tmp_path / f"{name}.png.json").read_text()) for name in "moc"}
    assert records["m"]["keep_mask"] == [[0, 0, 1, 1]] * 4 and records["o"]["keep_mask"] == [[1, 1, 0, 0]] * 4
    assert (records["o"]["label"], records["c"]["label"]) == (10, 3)
    assert len({(tmp_path / f"{n}.png").read_bytes() for n in "boc"}) == 3


@pytest.mark.parametrize("extra, message", [
    (["--box", "0.2,0.2,1.2,0.8"], "box 0.2,0.2,1.2,0.8 must lie in [0, 1]"),
    (["--box", "0.5,0.2,0.5,0.8"], "box 0.5,0.2,0.5,0.8 is empty"),
    (["--box", "a,b,c,d"], "--box 'a,b,c,d' must be four fractions"),
    (["--box", "0.4,0.4,0.45,0.45"], "covers no token of the 4x4 token grid"),
    (["--box", "0,0,1,1", "--mode", "outpaint"], "covers the whole 4x4 token grid, so out-painting has nothing"),
    (["--box", "0,0,1,1", "--mode", "class", "--class", "10"], "--class 10 is out of range: this model has classes 0..9"),
    (["--box", "0,0,1,1", "--mode", "class"], "--mode class needs --class N"),
    (["--box", "0,0,1,1", "--class", "2"], "--class is only for --mode class"),
    (["--box", "0,0,1,1", "--top-k", "900"], "top_k=900 exceeds the vocabulary size 256"),
])
def test_bad_edit_inputs_are_one_line_usage_errors(run_dir, photo, tmp_path, capsys, extra, message):
    argv = ["edit", str(photo), "--run", str(run_dir), "--out", str(tmp_path / "x.png"), "--device", "cpu"]
    if "--top-k" not in extra:
        argv += ["--top-k", "0"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_bad_image_and_mask_files(run_dir, photo, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "small_mask.png")
    model = ["--run", str(run_dir), "--top-k", "0", "--device", "cpu"]
    out = ["--out", str(tmp_path / "x.png")]
    for args, message in (
            ([str(tmp_path / "missing.png"), "--box", "0,0,1,1", *out], f"image {tmp_path / 'missing.png'} not found"),
            ([str(tmp_path / "notes.png"), "--box", "0,0,1,1", *out], "is not an image PIL can read"),
            ([str(photo), "--mask", str(tmp_path / "small_mask.png"), *out],
             "is 32x32 pixels but the image is 48x40; give a mask of the image's size"),
            ([str(photo), "--box", "0,0,1,1", "--out", str(tmp_path / "x.jpg")], "must end in .png")):
        assert main(["edit", *args, *model]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.glob("x.*"))


def test_show_grid_rows_are_the_requested_classes_and_repeat_per_seed(run_dir, var, tmp_path, capsys):
    argv = ["show", "--run", str(run_dir), "--classes", "4,0", "--count", "3", "--seed", "5", *SAMPLING]
    assert main([*argv, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    expected = to_uint8(var.autoregressive_infer_cfg(6, torch.tensor([4, 4, 4, 0, 0, 0]), g_seed=5, cfg=2, top_k=40,
                                                     top_p=0.9))
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(tile(tmp_path / "a.png", i // 3, i % 3, left=LABEL_W, top=0), want)
    assert json.loads((tmp_path / "a.png.json").read_text())["classes"] == [4, 0]
    assert main(["show", "--run", str(run_dir), "--classes", "4,12", "--out", str(tmp_path / "c.png"),
                 "--top-k", "0", "--device", "cpu"]) == 2
    assert "--classes 12 is out of range: this model has classes 0..9" in capsys.readouterr().err
    assert main(["show", "--run", str(run_dir), "--out", str(tmp_path / "d.png"), "--device", "cpu"]) == 2
    assert "top_k=900 exceeds the vocabulary size 256" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "d.png").exists()


def test_demo_inpaint_example_from_a_held_out_tensor(run_dir, var, tmp_path):
    held_out = SyntheticImages("val", 8, 32, 10)[5][0]
    out = write_inpaint_example(tmp_path / "example.png", held_out, run_dir=run_dir, count=2, seed=3)
    again = write_inpaint_example(tmp_path / "again.png", held_out, var=var, count=2, seed=3)
    assert out.read_bytes() == again.read_bytes()
    with Image.open(io.BytesIO(out.read_bytes())) as grid:
        assert grid.size == (5 * MIN_TILE + 6 * GAP, CAPTION_H + MIN_TILE + 2 * GAP)
    np.testing.assert_array_equal(tile(out, 0, 0), to_uint8(held_out.unsqueeze(0).add(1).div(2))[0])


def test_a_released_preset_without_its_weights_names_the_fetch_command(photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VARSCALE_CACHE", str(tmp_path / "empty-cache"))
    assert main(["edit", str(photo), "--model", "VAR-d16", "--box", "0,0,1,1", "--out", str(tmp_path / "e.png"),
                 "--device", "cpu"]) == 1
    assert "varscale assets fetch --what var-d16" in capsys.readouterr().err
    assert main(["show", "--model", "VAR-d16", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 1
    assert "varscale assets fetch --what var-d16" in capsys.readouterr().err
