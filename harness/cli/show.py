"""``varscale show``: a few samples per class from a run or a released preset as one labelled PNG grid.

The everyday look at a checkpoint (the release's ``demo_sample.ipynb``): one seeded call of the official sampler
for every requested class at once, one row per class, so the same seed gives the same grid.
"""
from __future__ import annotations

import argparse
import sys

DEFAULT_ROWS = 8


def register(subparsers) -> None:
    from harness.cli.preview_options import add_model_and_sampling_options

    p = subparsers.add_parser(
        "show", help="a labelled PNG grid of a few samples per class (quick look at a checkpoint)",
        description="Sample --count images for each of --classes in one seeded call and write them as a grid "
                    "(one row per class) with the settings beside it in <out>.json.")
    p.add_argument("--classes", help=f"comma-separated class ids (default: the first {DEFAULT_ROWS} classes)")
    add_model_and_sampling_options(p, count_help="images per class (default 4)")
    p.set_defaults(func=_cmd_show)


def parse_classes(text: str | None, num_classes: int) -> list[int]:
    from harness.cli.main import UsageError

    if text is None:
        return list(range(min(num_classes, DEFAULT_ROWS)))
    try:
        classes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--classes {text!r} must be comma-separated integers, e.g. 0,3,7") from None
    if not classes:
        raise UsageError("--classes is empty; give at least one class id")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"--classes {bad[0]} is out of range: this model has classes 0..{num_classes - 1}")
    return classes


def _cmd_show(args: argparse.Namespace) -> int:
    import torch

    from harness.cli.main import UsageError
    from harness.cli.preview_options import check_out, load_model, write_sidecar
    from harness.sampling.grid import labelled_grid, save_png
    from harness.sampling.loop import SamplingError, to_uint8
    from models.checkpoint import CheckpointError

    out = check_out(args)
    try:
        var, info = load_model(args)
        classes = parse_classes(args.classes, var.num_classes)
        if args.top_k > var.V:
            raise UsageError(f"top_k={args.top_k} exceeds the vocabulary size {var.V} of this model; pass "
                             f"--top-k {var.V} or smaller (0 disables top-k)")
        labels = torch.tensor([c for c in classes for _ in range(args.count)], device=args.device)
        threads = torch.get_num_threads()
        if torch.device(args.device).type == "cpu":
            torch.set_num_threads(args.cpu_threads)
        try:
            images = var.autoregressive_infer_cfg(len(labels), labels, g_seed=args.seed, cfg=args.cfg,
                                                  top_k=args.top_k, top_p=args.top_p, more_smooth=args.more_smooth)
        finally:
            torch.set_num_threads(threads)
    except (SamplingError, CheckpointError, ValueError) as exc:
        print(f"varscale show: error: {exc}", file=sys.stderr)
        return 1
    tiles = list(to_uint8(images.float()))
    rows = [tiles[r * args.count:(r + 1) * args.count] for r in range(len(classes))]
    save_png(labelled_grid(rows, row_labels=[f"class {c}" for c in classes]), out)
    write_sidecar(out, "show", args, info, {"classes": classes})
    print(out)
    return 0
