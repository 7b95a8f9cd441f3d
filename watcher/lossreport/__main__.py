"""`python -m lossreport` and the `lossreport` command.

Light on purpose: a spawned helper process (vega.ChartRenderer) re-runs the main module, and
this one imports the CLI only when called, so the helper's imports take 0.05-0.09 s, not
0.15-0.34 s.
"""

import sys


def main() -> int:
    from .cli.main import main as run_cli

    return run_cli()


if __name__ == "__main__":
    sys.exit(main())
