"""The ``gbi`` command line.

Subcommands: ``info``, ``generate``, ``fit``, ``scan`` and ``demo`` (:mod:`.basic`); ``toys`` and
``coverage`` (:mod:`.stats`); ``train cfm|paws|flows`` (:mod:`.train`, flows from :mod:`.ranode`) and
``ranode`` (:mod:`.ranode`); ``validate`` (:mod:`.validate`). Each module of this package registers its subcommands with
``register(sub)``; heavy imports happen inside the subcommands so that ``gbi --help`` is instant.
Errors from :mod:`gbi_zfit.errors` print one line and exit with status 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import GBIError

__all__ = ["build_parser", "main"]

EXAMPLES = """\
examples:
  gbi demo --out gbi-output                      # generate, fit with the oracle, plot (≈1–2 min)
  gbi generate --out data.root --s-over-sqrt-b 1 --mx 300 --my 150 --seed 1
  gbi fit data.root --oracle --minos --out results/
  gbi coverage --s-over-sqrt-b 1 --n-toys 500 --dask --out cov1   # toys → coverage table; rerun resumes
  gbi train cfm data.root --out run --quick && gbi train paws --background run/data/sr_background.npz --out run --quick
  gbi validate data.root --model run/models/paws --out run   # spurious signal in sideband windows
  gbi ranode data.root --oracle-background --mu-grid 1e-4 1e-1 10 --minuit --out run
  gbi info
"""


def build_parser() -> argparse.ArgumentParser:
    from . import basic, ranode, stats, train, validate

    p = argparse.ArgumentParser(
        prog="gbi",
        description="Generator-Based Inference for resonant searches (zfit plugin).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"gbi_zfit {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (basic, stats, train, ranode, validate):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GBIError as err:
        if args.debug:
            raise
        print(f"gbi {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
