"""Coverage of the oracle GBI-PAWS fit from pseudo-experiments (DESIGN §7), resumable: ``gbi coverage``.

Runs ``--n-toys`` toys of the exact generator (N_B,SR ~ Poisson(N_B,exp), n_S ~ Poisson(S/√B·√N_B,exp))
at θ = (--mx, --my), fits each with μ, mX, mY floating from the truth (HESSE, MINOS(μ)), profiles μ and
θ, and writes the coverage summary (``<out>/results/coverage_<tag>.json``), the pull and test-statistic
figures (``<out>/figures/``), and prints the table. Every finished toy is appended to ``--store``
(default ``<out>/results/toys.jsonl``); rerunning the same command resumes. This script is the
``gbi coverage`` subcommand (same options; see ``gbi coverage --help``) with INFO logging and
``--out coverage_out`` by default.

    python benchmarks/coverage.py --s-over-sqrt-b 1 --n-toys 500 --seed 1 --dask --workers 2 \\
        --store /tmp/coverage_1p0/toys.jsonl --out /tmp/coverage_1p0
    python benchmarks/coverage.py --summarize-only --store /tmp/coverage_1p0/toys.jsonl --out ...
"""

from __future__ import annotations

import logging
import sys

from gbi_zfit.cli import main as gbi


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    return gbi(["coverage", "--out", "coverage_out", *args])  # a later --out wins


if __name__ == "__main__":
    sys.exit(main())
