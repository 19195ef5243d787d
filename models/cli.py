"""`varscale models`: the preset table (parameters, FLOPs) and checkpoint inspection."""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list model presets with parameter and FLOP counts; inspect files")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    listing = sub.add_parser("list", help="the preset table")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_list)
    inspect = sub.add_parser("inspect", help="what a checkpoint file holds (keys, parameters, sha256)")
    inspect.add_argument("path")
    inspect.set_defaults(func=cmd_inspect)
    parser.set_defaults(func=cmd_list, json=False)


def cmd_list(args) -> int:
    import json

    from .flops import model_block
    from .registry import list_presets, var_spec

    rows = [model_block(var_spec(name)) for name in list_presets()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<14}{'depth':>6}{'width':>7}{'res':>5}{'L':>6}{'params':>16}{'w/o emb':>16}"
          f"{'fwd GFLOP/img':>15}{'train GFLOP/img':>17}")
    for name, row in zip(list_presets(), rows):
        spec = var_spec(name)
        print(f"{name:<14}{row['depth']:>6}{row['width']:>7}{spec.tokenizer.resolution:>5}{spec.L:>6}"
              f"{row['params_total']:>16,}{row['params_wo_emb']:>16,}{row['flops_fwd_per_image'] / 1e9:>15.3f}"
              f"{row['flops_train_per_image'] / 1e9:>17.3f}")
    print("FLOPs: analytic, 1 multiply-add = 2 FLOPs, dense attention, tokenizer excluded (models/flops.py)")
    return 0


def cmd_inspect(args) -> int:
    from .checkpoint import (
        describe_vae_checkpoint,
        describe_var_checkpoint,
        load_state_dict_file,
    )
    from .files import sha256_file

    state = load_state_dict_file(args.path)
    kind = describe_var_checkpoint(state) if any(k.startswith("blocks.") for k in state) else \
        describe_vae_checkpoint(state)
    print(f"{args.path}\n  sha256 {sha256_file(args.path)}\n  {len(state)} tensors, "
          f"{sum(v.numel() for v in state.values()):,} values; {kind}")
    return 0
