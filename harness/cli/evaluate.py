"""``varscale eval`` and ``varscale assets``: argument parsing only; the work is elsewhere."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    _register_eval(subparsers)
    _register_assets(subparsers)


# ------------------------------------------------------------------------------------------------------- eval

def _register_eval(subparsers) -> None:
    p = subparsers.add_parser("eval", help="FID, sFID, IS, precision, recall of a sample batch (ADM protocol)",
                              description="Score SAMPLES (ADM .npz, image folder or run directory) against a "
                                          "reference batch with the ADM evaluator protocol on torch-fidelity's "
                                          "Inception; optionally clean-fid FID/KID as a second opinion.")
    p.add_argument("samples", help="samples .npz (arr_0 uint8 NHWC), a folder of PNG/JPEG, or a run directory")
    p.add_argument("--ref", help="reference batch (.npz, e.g. VIRTUAL_imagenet256_labeled.npz, or a folder)")
    p.add_argument("--out", help="result JSON (default: next to the samples, or RUN_DIR/eval/)")
    p.add_argument("--inception-weights", help="torch-fidelity Inception .pth (default: cache, then torch hub)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--inception-dtype", choices=("float32", "float64"), default="float32",
                   help="internal dtype of the Inception (torch-fidelity allows float64 for extra precision)")
    p.add_argument("--fid-method", choices=("auto", "eigh", "sqrtm", "eigvals", "gram"), default="auto",
                   help="how tr sqrt(S1 S2) is computed: auto (default: gram below d images, else eigh), eigh "
                        "(symmetric eigenvalues, seconds, equal to sqrtm to 1e-6), sqrtm (ADM's scipy code; minutes per 2048-d matrix on a CPU), eigvals "
                        "(torch-fidelity), gram (exact via the raw features; fast for small N)")
    p.add_argument("--is-split-rule", choices=("adm", "equal"), default="adm",
                   help="adm (default): consecutive chunks of --is-split-size rows, the last shorter; equal: "
                        "--is-splits equal splits (torch-fidelity). Both equal ADM only at N = 50000")
    p.add_argument("--is-split-size", type=int, default=5000)
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--pr-distances", choices=("adm-float16", "float32", "float64"), default="adm-float16",
                   help="precision/recall distances: adm-float16 (default) reproduces ADM's float16 blocks; "
                        "float32 scores about 1e-3 to 2.4e-3 lower")
    p.add_argument("--adm-exact", action="store_const", const="adm-float16", dest="pr_distances",
                   help="same as --pr-distances adm-float16")
    p.add_argument("--bootstrap-rounds", type=int, default=200,
                   help="rounds of the bootstrap interval of IS, precision and recall (0: no interval)")
    p.add_argument("--fid-interval", choices=("delta", "bootstrap", "none"), default="delta",
                   help="95%% interval of FID and sFID: delta (default; normal interval with the standard error of "
                        "the influence function over samples, seconds), bootstrap (--fid-bootstrap-rounds rounds, "
                        "seconds per round at 10k x 2048 on a CPU) or none")
    p.add_argument("--fid-bootstrap-rounds", type=int, default=50,
                   help="rounds of the FID/sFID bootstrap when --fid-interval bootstrap (default 50)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets of 1000 (0: no KID)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    p.add_argument("--expected-samples", type=int, default=50_000,
                   help="warn when there are fewer samples than this (default: the protocol's 50000)")
    p.add_argument("--resolution", type=int, help="fail unless the samples are RESOLUTION x RESOLUTION")
    p.add_argument("--cache-dir", help="feature cache (default: $VARSCALE_CACHE/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--cache-samples", action="store_true",
                   help="cache the samples' features too (default: only the reference's; ~1 GB per 50k samples)")
    p.add_argument("--cleanfid", default="", metavar="MODES",
                   help="also run clean-fid FID/KID in these modes: clean,legacy_tensorflow")
    p.add_argument("--cleanfid-weights-dir", help="folder with clean-fid's inception-2015-12-05.pt")
    p.add_argument("--cleanfid-against", choices=("images", "stored-statistics"), default="images",
                   help="clean-fid FID against the reference's images (default; not comparable to the headline "
                        "FID) or, in legacy_tensorflow mode, its stored mu/sigma (comparable)")
    p.add_argument("--kid-seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the whole result JSON instead of the summary")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from harness.evaluation.cleanfid_check import MODES
    from harness.evaluation.evaluate import EvalConfig, evaluate_and_save
    from harness.evaluation.inception import InceptionWeightsError
    from harness.sampling.npz import SampleFormatError

    modes = tuple(m.strip() for m in args.cleanfid.split(",") if m.strip())
    if bad := [m for m in modes if m not in MODES]:
        raise UsageError(f"--cleanfid: unknown mode(s) {bad}; expected a comma list of {', '.join(MODES)}")
    for name in ("batch_size", "is_split_size", "is_splits"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("bootstrap_rounds", "fid_bootstrap_rounds", "kid_subsets"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.fid_interval == "bootstrap" and args.fid_bootstrap_rounds < 2:
        raise UsageError(f"--fid-bootstrap-rounds must be 2 or more with --fid-interval bootstrap, "
                         f"got {args.fid_bootstrap_rounds}")
    cfg = EvalConfig(samples=args.samples, ref=args.ref, out=args.out, overwrite=args.overwrite,
                     inception_weights=args.inception_weights, device=args.device, dtype=args.inception_dtype,
                     batch_size=args.batch_size, is_split_rule=args.is_split_rule, is_split_size=args.is_split_size,
                     is_splits=args.is_splits, pr_distances=args.pr_distances, fid_method=args.fid_method,
                     bootstrap_rounds=args.bootstrap_rounds, fid_interval=args.fid_interval,
                     fid_bootstrap_rounds=args.fid_bootstrap_rounds,
                     bootstrap_seed=args.bootstrap_seed, kid_subsets=args.kid_subsets,
                     expected_samples=args.expected_samples, resolution=args.resolution, cache_dir=args.cache_dir,
                     no_cache=args.no_cache, cache_samples=args.cache_samples, cleanfid_modes=modes,
                     cleanfid_weights_dir=args.cleanfid_weights_dir, cleanfid_against=args.cleanfid_against,
                     kid_seed=args.kid_seed)
    try:
        out, result = evaluate_and_save(cfg)
    except SampleFormatError as exc:   # a bad input (checks.EvalInputError included): nothing was written
        raise UsageError(str(exc)) from None
    except (InceptionWeightsError, FileNotFoundError, ValueError) as exc:
        print(f"varscale eval: error: {exc}", file=sys.stderr)
        return 1
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        line = result["summary"]
        for mode, values in (result["cleanfid"] or {}).items():
            line += (f" | clean-fid[{mode}] FID {values['fid']:.4f} vs {values['compared_against']['label']}, "
                     f"KID {values['kid']:.5f}")
        print(line)
        print(f"result: {out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------------- assets

def _register_assets(subparsers) -> None:
    p = subparsers.add_parser("assets", help="download (on a machine with network) or list evaluation assets")
    sub = p.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="download weights, reference batches and checkpoints into the cache")
    f.add_argument("--what", default="inception,inception-cleanfid,adm-ref-256",
                   help="comma list of asset names, or 'all' (see `varscale assets list`)")
    f.add_argument("--cache-dir", help="default: $VARSCALE_CACHE or ~/.cache/varscale (what eval/sample read)")
    f.add_argument("--force", action="store_true", help="download again even when present")
    f.set_defaults(func=_cmd_assets_fetch)
    ls = sub.add_parser("list", help="show which assets are present in the cache")
    ls.add_argument("--cache-dir")
    ls.add_argument("--verify", action="store_true", help="re-hash present files against the recorded sha256")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_assets_list)


def _cmd_assets_fetch(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from harness.evaluation import assets

    try:
        names = assets.parse_names(args.what)
    except assets.AssetError as exc:
        raise UsageError(str(exc)) from None
    root = assets.cache_dir(args.cache_dir)
    failed = 0
    for name in names:
        try:
            path = assets.fetch(assets.ASSETS[name], root, force=args.force)
            print(f"{name}: {path}")
        except Exception as exc:  # noqa: BLE001 - report every asset, then fail
            failed += 1
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_assets_list(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from harness.evaluation import assets

    root = assets.cache_dir(args.cache_dir)
    try:
        rows = assets.status(root, verify=args.verify)
    except assets.AssetError as exc:  # a damaged manifest: the user's input, named with its fix
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps({"cache_dir": str(root), "assets": rows}, indent=2))
        return 0
    print(f"cache: {root}")
    for row in rows:
        mark = "present" if row["present"] else "missing"
        if "verified" in row:
            mark += ", sha256 ok" if row["verified"] else ", SHA256 MISMATCH"
        print(f"  {row['name']:<20} {mark:<26} {row['description']}")
    return 1 if any(r.get("verified") is False for r in rows) else 0
