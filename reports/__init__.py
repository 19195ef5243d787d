"""Reports of sweeps and runs: `build_report(source, ...) -> Path` (reports/build.py), `varscale report`."""
from __future__ import annotations


def build_report(*args, **kwargs):
    """See reports.build.build_report; imported lazily so that `varscale --help` stays fast."""
    from reports.build import build_report as build

    return build(*args, **kwargs)
