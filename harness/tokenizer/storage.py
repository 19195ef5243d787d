"""Saving and loading tokenizer (VQVAE) files together with the constructor kwargs that rebuild them, and the
atomic safetensors writer that the exported VAR weights share.

Our tokenizer files are official-format state dicts in safetensors with the kwargs in the file's metadata
(``vqvae_kwargs``, JSON), so a run directory needs nothing but the path to rebuild its tokenizer. Official ``.pth``
files carry no kwargs; for those the config's ``tokenizer.kwargs`` must be given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from harness.config import ConfigError, TokenizerRef
from models.files import atomic_target, sha256_file

# kwargs of VQVAE that change its behaviour or shapes; a tokenizer file records all of them
KWARG_NAMES = ("vocab_size", "z_channels", "ch", "ch_mult", "share_quant_resi", "v_patch_nums", "beta",
               "using_znorm", "quant_conv_ks", "quant_resi", "default_qresi_counts", "dropout")


def vqvae_kwargs_of(vae) -> dict[str, Any]:
    q = vae.quantize
    phi = q.quant_resi
    share = 0 if type(phi).__name__ == "PhiNonShared" else 1 if type(phi).__name__ == "PhiShared" else len(phi.qresi_ls)
    return {"vocab_size": vae.vocab_size, "z_channels": vae.Cvae, "ch": vae.ch, "ch_mult": list(vae.ch_mult),
            "share_quant_resi": share, "v_patch_nums": list(vae.v_patch_nums), "beta": q.beta,
            "using_znorm": q.using_znorm, "quant_conv_ks": vae.quant_conv.kernel_size[0],
            "quant_resi": _quant_resi_of(phi)}


def _quant_resi_of(phi) -> float:
    for module in phi.modules():
        if hasattr(module, "resi_ratio"):
            return float(module.resi_ratio)
    return 0.0


def save_tokenizer(vae, path: Path, extra_metadata: dict[str, Any] | None = None) -> str:
    """Write the VQVAE state dict + kwargs atomically; returns the file's sha256."""
    path = Path(path)
    metadata = {"vqvae_kwargs": json.dumps(vqvae_kwargs_of(vae)), "format": "varscale-vqvae/1"}
    for key, value in (extra_metadata or {}).items():
        metadata[key] = json.dumps(value)
    save_state_dict_file(vae, path, metadata)
    return sha256_file(path)


def save_state_dict_file(module: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """``module``'s state dict (official key names, CPU tensors) as safetensors, written atomically: a reader never
    sees half a file, and a crash leaves the previous one. The same weights and metadata always give the same
    bytes (and so the same sha256, which token caches and runs record)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_target(path) as tmp:
        tmp.write_bytes(_sorted_metadata(save(state, metadata=metadata)))


def _sorted_metadata(blob: bytes) -> bytes:
    """safetensors stores its metadata from a hash map, in an order that changes from one process to the next;
    rewrite the JSON header with the metadata keys sorted (tensor entries keep their order and offsets)."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes so the tensor data stay aligned
    return len(text).to_bytes(8, "little") + text + blob[8 + size:]


def read_state_and_kwargs(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tokenizer file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            kwargs = json.loads(meta["vqvae_kwargs"]) if "vqvae_kwargs" in meta else None
            return load_file(str(path)), kwargs
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
            raise ConfigError(f"{path}: not a readable safetensors file ({_first_line(exc)}); it is empty, truncated "
                              "or another format: copy or export it again") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch reports damage and foreign pickles in many error types
        raise ConfigError(f"{path}: not a readable weights-only torch file ({_first_line(exc)}); it is truncated "
                          "or holds pickled objects rather than a state dict") from None
    return state, None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_tokenizer(ref: TokenizerRef, device: str | torch.device = "cpu"):
    """Build the frozen VQVAE of ``ref``; returns ``(vae, resolved_ref)`` with sha256 and kwargs filled in."""
    from models import VQVAE

    path = Path(ref.path)
    sha = sha256_file(path) if path.is_file() else None
    if ref.sha256 and sha != ref.sha256:
        raise ConfigError(f"tokenizer {path} has sha256 {sha}, but the config expects {ref.sha256}")
    state, file_kwargs = read_state_and_kwargs(path)
    kwargs = ref.kwargs if ref.kwargs is not None else file_kwargs
    if kwargs is None:
        raise ConfigError(f"tokenizer {path} records no constructor kwargs; give tokenizer.kwargs in the config")
    unknown = sorted(set(kwargs) - set(KWARG_NAMES))
    if unknown:
        raise ConfigError(f"tokenizer.kwargs has unknown key {unknown[0]!r}; allowed: {', '.join(KWARG_NAMES)}")
    vae = VQVAE(**kwargs, test_mode=True)
    vae.load_state_dict(state, strict=True)
    vae.to(device)
    return vae, TokenizerRef(path=str(ref.path), sha256=sha, kwargs=dict(kwargs))
