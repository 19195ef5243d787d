"""Checkpoint files: safe loading (`.pth` with weights_only, `.safetensors`), sha256, the Hugging Face cache,
and strict loading with errors that say what the file actually contains.

The released weights live in the Hugging Face repo `FoundationVision/var`. On compute nodes without network,
`resolve_official_file` reads the local cache only (`local_files_only`), and a missing file is an error that
names the file and the command to fetch it on a machine with network.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .files import sha256_file

HF_REPO_ID = "FoundationVision/var"
VAE_FILE = "vae_ch160v4096z32.pth"
OFFICIAL_VAR_FILES = {16: "var_d16.pth", 20: "var_d20.pth", 24: "var_d24.pth", 30: "var_d30.pth", 36: "var_d36.pth"}


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable, or does not fit the model."""


def default_cache_dir() -> Path:
    """`$VARSCALE_CACHE` or `~/.cache/varscale`: weights, reference batches, statistics."""
    return Path(os.environ.get("VARSCALE_CACHE", Path.home() / ".cache" / "varscale")).expanduser()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many kinds (KeyError, EOFError, ...)
        # torch's own text runs over many lines; the one fact a user needs is what was refused
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))  # torch names the class or callable it refused
        why = (f"it holds a pickled Python object ({refused.group(1)}), which is never unpickled here" if refused
               else (str(exc).strip().splitlines() or [type(exc).__name__])[0])
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({why}); expected a state dict of tensors saved with "
            "torch.save, or a .safetensors file"
        ) from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # our training checkpoints nest the model under "model"
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def resolve_official_file(filename: str, cache_dir: str | Path | None = None, offline: bool | None = None) -> Path:
    """Path of a released file in the Hugging Face cache, downloading it when the network is allowed."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "hf"
    try:
        return Path(hf_hub_download(HF_REPO_ID, filename, cache_dir=str(cache), local_files_only=offline))
    except LocalEntryNotFoundError as exc:
        what = "vae" if filename == VAE_FILE else filename.removesuffix(".pth").replace("_", "-")
        raise CheckpointError(
            f"{filename} is not in the local cache {cache} and this machine is offline; on a machine with network "
            f"run `varscale assets fetch --what {what}` (same VARSCALE_CACHE) and copy the cache here"
        ) from exc


def describe_var_checkpoint(state: dict[str, torch.Tensor]) -> str:
    from .registry import spec_from_checkpoint_keys

    info = spec_from_checkpoint_keys({k: tuple(v.shape) for k, v in state.items()})
    if info["depth"] <= 0:
        return "it has no transformer blocks (is it a VAR checkpoint?)"
    saln = ", shared AdaLN" if info["shared_aln"] else ""
    return f"it looks like VAR-d{info['depth']} (depth {info['depth']}, width {info['width']}{saln})"


def describe_vae_checkpoint(state: dict[str, torch.Tensor]) -> str:
    if "quantize.embedding.weight" not in state or "encoder.conv_in.weight" not in state:
        return "it has no tokenizer codebook or encoder (is it a VQVAE checkpoint?)"
    V, Cvae = state["quantize.embedding.weight"].shape
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down."))
    return f"it looks like a tokenizer with vocab_size={V}, z_channels={Cvae}, ch={ch}, {levels} levels"


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint",
                assign: bool = False) -> None:
    """`load_state_dict(strict=True)` with an error that lists the differences and what the file holds.

    `assign=True` adopts the file's tensors (for a model built on the meta device); floating tensors are cast to
    the model's dtype first, so an fp16 file still gives an fp32 model.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
                  and k != "quantize.ema_vocab_hit_SV"]
    if missing or unexpected or mismatched:
        if any(k.startswith("blocks.") for k in list(state) + list(own)):
            hint = describe_var_checkpoint(state)
        else:
            hint = describe_vae_checkpoint(state)
        lines = [f"{source} does not fit the model" + (f"; {hint}" if hint else "")]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
        raise CheckpointError("\n".join(lines))
    if assign:
        state = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=assign)


def load_vae_var(spec, vae_path: str | Path, var_path: str | Path, device: str | torch.device = "cpu"):
    """Build (vae, var) for a `VARSpec` and load both files strictly; returns (vae, var, provenance)."""
    from .registry import build

    vae_state, var_state = load_state_dict_file(vae_path), load_state_dict_file(var_path)
    vae, var = build(spec, device="meta")  # no memory until the weights are assigned
    load_strict(vae, vae_state, source=str(vae_path), assign=True)
    load_strict(var, var_state, source=str(var_path), assign=True)
    provenance = {"vae": {"path": str(vae_path), "sha256": sha256_file(vae_path)},
                  "var": {"path": str(var_path), "sha256": sha256_file(var_path)}}
    return vae.to(device), var.to(device).eval(), provenance


def load_official(depth: int, device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                  offline: bool | None = None, vae_path: str | Path | None = None,
                  var_path: str | Path | None = None):
    """The released tokenizer and VAR-d{depth} with the released weights (from the cache or given paths)."""
    from .registry import var_spec

    if depth not in OFFICIAL_VAR_FILES:
        raise CheckpointError(f"no released checkpoint for depth {depth}; released depths: {sorted(OFFICIAL_VAR_FILES)}")
    vae_path = Path(vae_path) if vae_path else resolve_official_file(VAE_FILE, cache_dir, offline)
    var_path = Path(var_path) if var_path else resolve_official_file(OFFICIAL_VAR_FILES[depth], cache_dir, offline)
    return load_vae_var(var_spec(f"VAR-d{depth}"), vae_path, var_path, device)
