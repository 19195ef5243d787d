"""Seed check of `varscale demo`: on the sizes every seed has finished, the ordering of the sizes and the
paper-form exponent of loss against N, for the sweeps demo-cpu (seed 0), demo-cpu-seed1 and demo-cpu-seed2.

Usage: python benchmarks/demo_seed_check.py [OUT/sweeps]   (after `varscale demo --seed 1` and `--seed 2`)
"""
import sys
from pathlib import Path

from analysis.fits import fit_sweep
from sweeps.collect import collect_table
from sweeps.state import SweepState

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/sweeps")
tables = {}
for name in ("demo-cpu", "demo-cpu-seed1", "demo-cpu-seed2"):
    t = collect_table(SweepState.load(root / name))
    done = t[t["state"] == "COMPLETED"]
    tables[name] = done
common = set.intersection(*(set(t["depth"].unique()) for t in tables.values()))
print("depths finished by every seed:", sorted(int(d) for d in common))
for name, t in tables.items():
    sub = t[t["depth"].isin(common)]
    final = sub[sub["split"] == "val"].sort_values("step").groupby("point_id").tail(1).sort_values("params_total")
    fits = fit_sweep(sub, n_boot=1000, against=("N",), forms=("paper",), chinchilla=False, metrics=("loss_last", "loss_mean"))
    f = fits.get("loss_last", "N", "paper"); g = fits.get("loss_mean", "N", "paper")
    print(f"{name}: loss_last " + " > ".join(f"d{int(d)} {v:.4f}" for d, v in zip(final['depth'], final['loss_last'])))
    print(f"   loss_last alpha {f.params['alpha']:.4f} [{f.ci_low['alpha']:.4f}, {f.ci_high['alpha']:.4f}] r {f.r:.4f};"
          f" loss_mean alpha {g.params['alpha']:.4f} [{g.ci_low['alpha']:.4f}, {g.ci_high['alpha']:.4f}] r {g.r:.4f}")
    print("   strictly decreasing:", all(final[m].diff().dropna().lt(0).all() for m in ("loss_last", "loss_mean", "err_last", "err_mean")))
