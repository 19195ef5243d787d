"""Coverage of the intervals `varscale fit` reports, on sweeps simulated from known laws (CPU, a few minutes).

Each simulated sweep is one final loss per model size at the VAR paper's depths, drawn from a known law times
log-normal noise, and goes through `analysis.fits.fit_law`, the very function that fills fits.json. The share
of sweeps whose reported interval holds the true parameter is printed per interval type; a correct 95% method
gives 0.95 up to the binomial sd (0.011 at 400 sweeps).

    python benchmarks/bench_coverage.py --datasets 400
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.fits import fit_law
from analysis.synthetic import paper_params

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


def chinchilla_coverage(n_sizes: int, datasets: int, noise: float, level: float, n_boot: int):
    """Sweeps of n_sizes x 4 training lengths through fit_sweep, which fills fits.json's Chinchilla entries."""
    from analysis.fits import fit_sweep
    from analysis.synthetic import SyntheticLaw, synthetic_sweep_table

    law = SyntheticLaw(e_inf=CHINCHILLA["E"], a_coef=CHINCHILLA["A"], a_exp=CHINCHILLA["a"],
                       b_coef=CHINCHILLA["B"], b_exp=CHINCHILLA["b"])
    flat = lambda n, d: 0.5 + 0 * np.asarray(n, float)  # noqa: E731  (metrics not looked at)
    laws = {"loss_last": law, "loss_mean": flat, "err_last": flat, "err_mean": flat}
    hits, start = dict.fromkeys(CHINCHILLA, 0), time.perf_counter()
    for seed in range(datasets):
        table = synthetic_sweep_table(depths=SIZES[n_sizes], images_per_run=CHINCHILLA_IMAGES, evals_per_run=1,
                                      noise=noise, seed=seed, laws=laws).assign(tokens_seen=np.nan)
        fit = fit_sweep(table, metrics=("loss_last",), against=("N",), forms=("paper",), n_boot=n_boot, seed=seed,
                        ci_level=level).get("loss_last", "N,D", "chinchilla")
        for name, value in CHINCHILLA.items():
            hits[name] += fit.ci_low[name] <= value <= fit.ci_high[name]
    return {k: v / datasets for k, v in hits.items()}, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=400)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--noise-paper", type=float, default=0.02, help="log-normal sd of the pure power law")
    parser.add_argument("--noise-saturating", type=float, default=0.01, help="log-normal sd, law with a constant")
    parser.add_argument("--chinchilla-datasets", type=int, default=400, help="0 skips the Chinchilla form")
    parser.add_argument("--chinchilla-boot", type=int, default=1000, help="bootstrap resamples (fit default)")
    parser.add_argument("--only-chinchilla", action="store_true")
    args = parser.parse_args(argv)
    print(f"{'form':<11} {'sizes':>5} {'param':<6} {'coverage':>8} {'in [0.93,0.97]':>14} {'not identified':>14} "
          f"{'s':>6}")
    ok = True
    with threadpool_limits(limits=1):
        for form, noise in (() if args.only_chinchilla else
                            (("paper", args.noise_paper), ("saturating", args.noise_saturating))):
            for n_sizes in SIZES:
                rates, unbounded, seconds = coverage(form, n_sizes, args.datasets, noise, args.level)
                for name, rate in rates.items():
                    inside = 0.93 <= rate <= 0.97
                    ok &= inside
                    print(f"{form:<11} {n_sizes:>5} {name:<6} {rate:>8.3f} {'yes' if inside else 'NO':>14} "
                          f"{unbounded[name]:>14.3f} {seconds:>6.1f}")
        for n_sizes in SIZES if args.chinchilla_datasets else ():
            rates, seconds = chinchilla_coverage(n_sizes, args.chinchilla_datasets, args.noise_saturating,
                                                 args.level, args.chinchilla_boot)
            for name, rate in rates.items():
                inside = 0.93 <= rate <= 0.97
                ok &= inside
                print(f"{'chinchilla':<11} {n_sizes:>5} {name:<6} {rate:>8.3f} {'yes' if inside else 'NO':>14} "
                      f"{'':>14} {seconds:>6.1f}")
    print("laws against compute (Pareto frontier): no interval is reported (see docs/analysis.md)")
    print(f"{args.datasets} simulated sweeps per row, level {args.level}; all inside [0.93, 0.97]: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
