"""``varscale assets fetch|list``: the files evaluation and sampling need, downloaded once on a machine with network.

Compute nodes are usually offline, so a login node runs ``varscale assets fetch`` into the shared cache directory
(``$VARSCALE_CACHE`` or ``~/.cache/varscale``) and everything else reads from there without network.

Integrity: downloads land in a temporary file that replaces the target only after its sha256 checks out. Where
this project knows the hash in advance it is verified (torch hub file names carry the first 8 hex digits of the
sha256, e.g. ``...-6726825d.pth``); for the other files the sha256 measured at download time is written to
``assets.json`` in the cache (trust on first use), and ``varscale assets list --verify`` re-checks every file
against it. The VAR checkpoints go through ``models.checkpoint`` into the Hugging Face cache layout it reads.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.evaluation import cleanfid_check as cleanfid_backend
from harness.evaluation import inception
from models.files import atomic_target, atomic_write_text, utc_now_iso

ADM_BASE = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet"


@dataclass(frozen=True)
class Asset:
    name: str
    description: str
    filename: str
    subdir: str = ""                  # under the cache directory (URL assets)
    url: str | None = None
    hf_filename: str | None = None    # a file of the FoundationVision/var Hugging Face repo instead of a URL
    sha256: str | None = None         # full hash, when known in advance
    sha256_prefix: str | None = None  # leading hex digits, when only those are known (torch hub naming)


def _hf(name: str, filename: str, description: str) -> Asset:
    return Asset(name, description, filename, hf_filename=filename)


ASSETS: dict[str, Asset] = {a.name: a for a in [
    Asset("inception", "torch-fidelity's TF-ported Inception-v3 (FID, sFID, IS, precision/recall)",
          inception.WEIGHTS_FILENAME, "inception", inception.WEIGHTS_URL,
          sha256_prefix=inception.WEIGHTS_SHA256_PREFIX),
    Asset("inception-cleanfid", "NVIDIA's TorchScript Inception used by clean-fid (second opinion)",
          cleanfid_backend.WEIGHTS_FILENAME, "cleanfid", cleanfid_backend.WEIGHTS_URL),
    Asset("adm-ref-256", "ADM reference batch, ImageNet 256x256 (10k images + full-train mu/sigma)",
          "VIRTUAL_imagenet256_labeled.npz", "adm-ref", f"{ADM_BASE}/256/VIRTUAL_imagenet256_labeled.npz"),
    Asset("adm-ref-512", "ADM reference batch, ImageNet 512x512",
          "VIRTUAL_imagenet512.npz", "adm-ref", f"{ADM_BASE}/512/VIRTUAL_imagenet512.npz"),
    _hf("vae", "vae_ch160v4096z32.pth", "VAR's multi-scale VQVAE tokenizer"),
    _hf("var-d16", "var_d16.pth", "VAR-d16 (310M), ImageNet 256"),
    _hf("var-d20", "var_d20.pth", "VAR-d20 (600M), ImageNet 256"),
    _hf("var-d24", "var_d24.pth", "VAR-d24 (1.0B), ImageNet 256"),
    _hf("var-d30", "var_d30.pth", "VAR-d30 (2.0B), ImageNet 256"),
    _hf("var-d36", "var_d36.pth", "VAR-d36-s (2.3B), ImageNet 512"),
]}
DEFAULT_FETCH = ("inception", "inception-cleanfid", "adm-ref-256")


class AssetError(RuntimeError):
    pass


def parse_names(what: str) -> list[str]:
    names = [n.strip() for n in what.split(",") if n.strip()]
    if names == ["all"]:
        return list(ASSETS)
    unknown = [n for n in names if n not in ASSETS]
    if unknown or not names:
        raise AssetError(f"unknown asset(s) {unknown or what!r}; known: {', '.join(ASSETS)} (or 'all')")
    return names


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit).expanduser() if explicit else inception.varscale_cache_dir()


def manifest_path(root: Path) -> Path:
    return root / "assets.json"


def read_manifest(root: Path) -> dict:
    path = manifest_path(root)
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AssetError(f"{path} is not readable JSON ({exc}); it only records what was downloaded: delete it "
                         "and run `varscale assets fetch` again") from None
    if not isinstance(manifest, dict):
        raise AssetError(f"{path} must hold a JSON object; delete it and run `varscale assets fetch` again")
    return manifest


def _record(root: Path, asset: Asset, path: Path, sha256: str) -> None:
    manifest = read_manifest(root)
    manifest[asset.name] = {"path": str(path), "sha256": sha256, "bytes": path.stat().st_size,
                            "source": asset.url or f"hf://FoundationVision/var/{asset.hf_filename}",
                            "fetched": utc_now_iso()}
    atomic_write_text(manifest_path(root), json.dumps(manifest, indent=1) + "\n")


def _check_hash(asset: Asset, sha256: str, where: str) -> None:
    if asset.sha256 and sha256 != asset.sha256:
        raise AssetError(f"{asset.name}: {where} has sha256 {sha256}, expected {asset.sha256}")
    if asset.sha256_prefix and not sha256.startswith(asset.sha256_prefix):
        raise AssetError(f"{asset.name}: {where} has sha256 {sha256}, which does not start with "
                         f"{asset.sha256_prefix} as the file name promises; the download is corrupt")


def local_path(asset: Asset, root: Path) -> Path | None:
    """Where the asset is on this machine, or None."""
    if asset.hf_filename:
        from models.checkpoint import CheckpointError, resolve_official_file

        try:
            return resolve_official_file(asset.hf_filename, cache_dir=root / "hf", offline=True)
        except CheckpointError:
            return None
    path = root / asset.subdir / asset.filename
    return path if path.is_file() else None


def _download(url: str, target: Path, asset: Asset) -> str:
    import urllib.request

    from tqdm import tqdm

    digest = hashlib.sha256()
    with atomic_target(target, suffix=".part") as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=asset.name, disable=None) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        sha256 = digest.hexdigest()
        _check_hash(asset, sha256, url)   # raising here keeps the target as it was
    return sha256


def fetch(asset: Asset, root: Path, force: bool = False) -> Path:
    """Download one asset into the cache (no-op when present and ``force`` is off); returns its path."""
    existing = local_path(asset, root)
    if existing is not None and not force:
        return existing
    if asset.hf_filename:
        from models.checkpoint import resolve_official_file
        from models.files import sha256_file

        path = resolve_official_file(asset.hf_filename, cache_dir=root / "hf", offline=False)
        sha256 = sha256_file(path)
        _check_hash(asset, sha256, str(path))
    else:
        path = root / asset.subdir / asset.filename
        sha256 = _download(asset.url, path, asset)
    _record(root, asset, path, sha256)
    return path


def status(root: Path, verify: bool = False) -> list[dict]:
    """One row per known asset: present or not, and with ``verify`` whether its sha256 still matches."""
    from models.files import sha256_file

    manifest = read_manifest(root)
    rows = []
    for asset in ASSETS.values():
        path = local_path(asset, root)
        row = {"name": asset.name, "present": path is not None, "path": str(path) if path else None,
               "description": asset.description, "recorded_sha256": manifest.get(asset.name, {}).get("sha256")}
        if verify and path is not None:
            sha256 = sha256_file(path)
            expected = row["recorded_sha256"]
            try:
                _check_hash(asset, sha256, str(path))
                row["verified"] = expected is None or expected == sha256
            except AssetError:
                row["verified"] = False
            row["sha256"] = sha256
        rows.append(row)
    return rows
