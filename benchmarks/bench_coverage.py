"""Coverage of the intervals `varscale fit` reports, on sweeps simulated from known laws (CPU, ~20 minutes).

Every simulated sweep goes through the very function that fills fits.json, and the share of sweeps whose
reported interval holds the truth is printed per interval type; a correct 95% method gives 0.95 up to the
binomial sd (0.011 at 400 sweeps).
- N: one final loss per model size at the VAR paper's depths, from a known law times log-normal noise, through
  `analysis.fits.fit_law` (exact t / Fieller, profile likelihood);
- chinchilla: runs of every size at 4 training lengths from E + A/N^a + B/D^b, through `fit_sweep`
  (parametric bootstrap for A, a, b; profile likelihood for B; inverted parametric-bootstrap test for E);
- C: training curves of every size (records log-spaced over two decades of images seen) from the same law,
  through `analysis.fits.frontier_law` (smoothed frontier, basic residual bootstrap). The curves have no true
  power law in C, so the truth is the pseudo-true one: the same law fitted to the noise-free frontier (the
  lowest noise-free loss reached with at most each budget, from the law itself) on the fit's grid of budgets.

    python benchmarks/bench_coverage.py --datasets 400                      # all parts
    python benchmarks/bench_coverage.py --datasets 400 --parts C            # one part
    python benchmarks/bench_coverage.py --datasets 400 --parts chinchilla --sizes 5   # one part, 5 sizes
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.fits import fit_law
from analysis.frontier_fit import GRID_POINTS
from analysis.synthetic import paper_params
from models.flops import train_flops_per_image
from models.registry import var_spec

SIZES = {5: (6, 12, 18, 24, 30), 8: (6, 8, 10, 12, 16, 20, 24, 30)}
PURE = {"beta": 2.0, "alpha": -0.23}                 # the paper's Eq. 11 (last scale)
SATURATING = {"E": 2.0, "X0": 0.05, "alpha": 0.35}    # a law with an irreducible term, N in billions


def simulate(form: str, sizes: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    if form == "paper":
        clean = (PURE["beta"] * sizes) ** PURE["alpha"]
    else:
        clean = SATURATING["E"] + (SATURATING["X0"] / sizes) ** SATURATING["alpha"]
    return clean * np.exp(rng.normal(0, noise, sizes.size))


def coverage(form: str, n_sizes: int, datasets: int, noise: float, level: float) -> tuple[dict, dict, float]:
    sizes = np.array([paper_params(d) for d in SIZES[n_sizes]]) / 1e9
    truth = PURE if form == "paper" else SATURATING
    hits, not_identified = dict.fromkeys(truth, 0), dict.fromkeys(truth, 0)
    start = time.perf_counter()
    for seed in range(datasets):
        law = fit_law(form, sizes, simulate(form, sizes, np.random.default_rng([n_sizes, seed]), noise), level)
        for name, value in truth.items():
            hits[name] += law.ci_low[name] <= value <= law.ci_high[name]
            not_identified[name] += any(flag.startswith(f"{name}:") and "not identified" in flag
                                        for flag in law.flags)
    return ({k: v / datasets for k, v in hits.items()}, {k: v / datasets for k, v in not_identified.items()},
            time.perf_counter() - start)


CHINCHILLA = {"E": 1.8, "A": 400.0, "a": 0.34, "B": 410.0, "b": 0.28}  # N in parameters, D in images
CHINCHILLA_IMAGES = (3e5, 1e6, 3e6, 1e7)
FRONTIER_IMAGES = (1e5, 1e7)  # each run's records: log-spaced images seen, two decades of its training


def chinchilla_coverage(n_sizes: int, datasets: int, noise: float, level: float, n_boot: int):
    """Sweeps of n_sizes x 4 training lengths through fit_sweep, which fills fits.json's Chinchilla entries."""
    from analysis.fits import fit_sweep
    from analysis.synthetic import SyntheticLaw, synthetic_sweep_table

    law = SyntheticLaw(e_inf=CHINCHILLA["E"], a_coef=CHINCHILLA["A"], a_exp=CHINCHILLA["a"],
                       b_coef=CHINCHILLA["B"], b_exp=CHINCHILLA["b"])
    flat = lambda n, d: 0.5 + 0 * np.asarray(n, float)  # noqa: E731  (metrics not looked at)
    laws = {"loss_last": law, "loss_mean": flat, "err_last": flat, "err_mean": flat}
    hits, unbounded, start = dict.fromkeys(CHINCHILLA, 0), dict.fromkeys(CHINCHILLA, 0), time.perf_counter()
    for seed in range(datasets):
        table = synthetic_sweep_table(depths=SIZES[n_sizes], images_per_run=CHINCHILLA_IMAGES, evals_per_run=1,
                                      noise=noise, seed=seed, laws=laws).assign(tokens_seen=np.nan)
        fit = fit_sweep(table, metrics=("loss_last",), against=("N",), forms=("paper",), n_boot=n_boot, seed=seed,
                        ci_level=level).get("loss_last", "N,D", "chinchilla")
        # flags name their parameters before the colon: "E: ...", "b, B: ..."
        named = [flag.split(":")[0].split(", ") for flag in fit.flags if "not identified" in flag]
        for name, value in CHINCHILLA.items():
            hits[name] += fit.ci_low[name] <= value <= fit.ci_high[name]
            unbounded[name] += any(name in names for names in named)
    return ({k: v / datasets for k, v in hits.items()}, {k: v / datasets for k, v in unbounded.items()},
            time.perf_counter() - start)


def frontier_curves(n_sizes: int, records: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training curves of the CHINCHILLA law: (compute in PFLOPs, noise-free loss, run id) per record, and the
    noise-free frontier on the grid the fit uses (the pseudo-truth's points, computed from the law itself)."""
    c, clean, runs, ends = [], [], [], []
    for depth in SIZES[n_sizes]:
        n_params, per_image = paper_params(depth), train_flops_per_image(var_spec(f"VAR-d{depth}"))
        images = np.geomspace(FRONTIER_IMAGES[0], FRONTIER_IMAGES[1], records)
        c.append(per_image * images / 1e15)
        clean.append(chinchilla_loss(n_params, images))
        runs += [f"d{depth}"] * records
        ends.append((n_params, per_image, images[0], images[-1]))
    c, clean = np.concatenate(c), np.concatenate(clean)
    grid = np.exp(np.linspace(np.log(c.min()), np.log(c.max()), GRID_POINTS))
    # each run's loss at the budget (held after its last record, absent before its first); the lowest of them
    reached = [np.where(grid * 1e15 / per_image >= first * (1 - 1e-12),
                        chinchilla_loss(n, np.clip(grid * 1e15 / per_image, first, last)), np.inf)
               for n, per_image, first, last in ends]
    return c, clean, np.array(runs), np.vstack([grid, np.min(reached, axis=0)])


def chinchilla_loss(n_params, images):
    return CHINCHILLA["E"] + CHINCHILLA["A"] / n_params ** CHINCHILLA["a"] + CHINCHILLA["B"] / images ** CHINCHILLA["b"]


def frontier_coverage(form: str, n_sizes: int, datasets: int, noise: float, level: float, n_boot: int,
                      records: int):
    """Simulated training curves through `frontier_law`, which fills fits.json's laws against C; the truth is
    the same law fitted (least squares, no noise) to the noise-free frontier on the same grid."""
    from analysis.fits import fit_law, frontier_law

    c, clean, runs, (grid, lowest) = frontier_curves(n_sizes, records)
    truth = fit_law(form, grid, lowest, level, x_name="C").params
    hits, unbounded, start = dict.fromkeys(truth, 0), dict.fromkeys(truth, 0), time.perf_counter()
    for seed in range(datasets):
        rng = np.random.default_rng([n_sizes, records, seed])
        law = frontier_law(form, c, clean * np.exp(rng.normal(0, noise, clean.size)), runs, level, n_boot, seed)
        for name, value in truth.items():
            hits[name] += law.ci_low[name] <= value <= law.ci_high[name]
            unbounded[name] += any(flag.startswith(f"{name}:") and "not identified" in flag for flag in law.flags)
    return ({k: v / datasets for k, v in hits.items()}, {k: v / datasets for k, v in unbounded.items()},
            time.perf_counter() - start, truth)


def _row(form: str, n_sizes: int, rates: dict, unbounded: dict | None, seconds: float, extra: str = "") -> bool:
    ok = True
    for name, rate in rates.items():
        inside = 0.93 <= rate <= 0.97
        ok &= inside
        share = f"{unbounded[name]:>14.3f}" if unbounded else f"{'':>14}"
        print(f"{form:<15} {n_sizes:>5} {name:<6} {rate:>8.3f} {'yes' if inside else 'NO':>14} {share} "
              f"{seconds:>6.1f} {extra}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=400, help="simulated sweeps per row")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--parts", default="N,chinchilla,C",
                        help="N: laws against N; chinchilla: E + A/N^a + B/D^b; C: laws against compute")
    parser.add_argument("--noise-paper", type=float, default=0.02, help="log-normal sd of the pure power law")
    parser.add_argument("--noise-saturating", type=float, default=0.01,
                        help="log-normal sd of the law with a constant, the Chinchilla form and the curves")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (the fit's default)")
    parser.add_argument("--sizes", default="5,8", help="numbers of model sizes (5: the paper's depths; 8)")
    parser.add_argument("--records", default="20,12", help="records per training curve for the laws against C")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    sizes = [int(count) for count in args.sizes.split(",")]
    print(f"{'form':<15} {'sizes':>5} {'param':<6} {'coverage':>8} {'in [0.93,0.97]':>14} {'not identified':>14} "
          f"{'s':>6}")
    ok = True
    with threadpool_limits(limits=1):
        for form, noise in ((("paper", args.noise_paper), ("saturating", args.noise_saturating))
                            if "N" in parts else ()):
            for n_sizes in sizes:
                rates, unbounded, seconds = coverage(form, n_sizes, args.datasets, noise, args.level)
                ok &= _row(form, n_sizes, rates, unbounded, seconds)
        for n_sizes in sizes if "chinchilla" in parts else ():
            rates, unbounded, seconds = chinchilla_coverage(n_sizes, args.datasets, args.noise_saturating,
                                                            args.level, args.n_boot)
            ok &= _row("chinchilla", n_sizes, rates, unbounded, seconds)
        for records in map(int, args.records.split(",")) if "C" in parts else ():
            for form in ("paper", "saturating"):
                for n_sizes in sizes:
                    rates, unbounded, seconds, truth = frontier_coverage(
                        form, n_sizes, args.datasets, args.noise_saturating, args.level, args.n_boot, records)
                    ok &= _row(f"{form} vs C", n_sizes, rates, unbounded, seconds,
                               f"({records} records per run; truth " +
                               ", ".join(f"{k}={v:.4g}" for k, v in truth.items()) + ")")
    print(f"{args.datasets} simulated sweeps per row, level {args.level}; all inside [0.93, 0.97]: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
