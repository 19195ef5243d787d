"""``varscale edit``: zero-shot in-painting, out-painting and class-conditional editing of one image.

The release's ``demo_zero_shot_edit.ipynb`` as a command: the image's tokens are kept outside (in-painting,
class editing) or inside (out-painting) a box or mask while VAR samples the rest (models/edit.py has the rule).
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from harness.cli.preview_options import add_model_and_sampling_options

    p = subparsers.add_parser(
        "edit", help="zero-shot in-painting / out-painting / class-conditional editing of an image (PNG grid)",
        description="Edit one image with a VAR and write a grid: the input, the input with the regenerated area "
                    "tinted red, the tokenizer's reconstruction (what the kept tokens look like) and --count "
                    "results; the settings go beside it in <out>.json. The image (any "
                    "format PIL reads) is resized and centre-cropped as the release's validation data.")
    p.add_argument("image", help="the image to edit")
    region = p.add_mutually_exclusive_group(required=True)
    region.add_argument("--box", help="the region as fractions of the side: y0,x0,y1,x1 (e.g. 0.25,0.25,0.75,0.75)")
    region.add_argument("--mask", help="the region as an image of the input's size: white marks it")
    p.add_argument("--mode", choices=("inpaint", "outpaint", "class"), default="inpaint",   # edit.MODES
                   help="inpaint: regenerate the region; outpaint: keep the region, regenerate the rest; "
                        "class: regenerate the region as --class")
    p.add_argument("--class", dest="class_id", type=int, help="the class for --mode class")
    add_model_and_sampling_options(p, count_help="number of edited results (default 4)")
    p.set_defaults(func=_cmd_edit)


def parse_box(text: str) -> list[float]:
    from harness.cli.main import UsageError

    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--box {text!r} must be four fractions y0,x0,y1,x1, e.g. 0.25,0.25,0.75,0.75") from None


def _cmd_edit(args: argparse.Namespace) -> int:
    from harness.cli.main import UsageError
    from harness.cli.preview_options import check_out, load_model, write_sidecar
    from harness.sampling import edit
    from harness.sampling.grid import save_png
    from harness.sampling.loop import SamplingError
    from models.checkpoint import CheckpointError
    from models.files import sha256_file

    out = check_out(args)
    box = parse_box(args.box) if args.box else None
    try:
        source = edit.open_image(args.image)   # bad inputs fail before a large model loads
        var, info = load_model(args)
        label = edit.edit_label(args.mode, args.class_id, var.num_classes)
        vae = var.vae_proxy[0]
        if box is not None:
            region_hw = edit.region_from_box(box, var.patch_nums)
        else:
            region_hw = edit.region_from_mask_image(args.mask, source.size, vae.resolution, var.patch_nums[-1])
        keep_hw = edit.keep_mask_for(region_hw, args.mode)
        image_13HW = edit.prepare_image(source, vae.resolution)
        results = edit.run_edit(var, image_13HW, keep_hw, label, args.count, args.seed, args.cfg, args.top_k,
                                args.top_p, args.more_smooth, args.cpu_threads)
    except edit.EditError as exc:
        raise UsageError(str(exc)) from None
    except (SamplingError, CheckpointError, ValueError) as exc:
        print(f"varscale edit: error: {exc}", file=sys.stderr)
        return 1
    captions = [f"#{i}" for i in range(args.count)]
    save_png(edit.edit_grid(image_13HW, keep_hw, edit.reconstruct(var, image_13HW), results, captions), out)
    write_sidecar(out, "edit", args, info, {
        "image": {"path": args.image, "sha256": sha256_file(args.image), "size": list(source.size)},
        "region": {"box": box} if box is not None else {"mask": args.mask, "sha256": sha256_file(args.mask)},
        "mode": args.mode, "label": label, "keep_mask": keep_hw.int().tolist()})
    print(out)
    return 0
