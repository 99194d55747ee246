"""Profile ``condor_annex create`` and ``status`` against a plain moto server with pyinstrument.

``python -m benchmarks.profile [--count N]``.  Needs ``pyinstrument`` in the venv
(``.venv/bin/pip install pyinstrument``; deliberately not a project dependency).  Each command
runs as the real console script in a child process under ``python -m pyinstrument``, so imports
are profiled too; the text reports go to ``benchmarks/results/profile-<command>.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks import env, moto_rows
from benchmarks.report import RESULTS_DIR


def profile(args: list[str], out_name: str) -> str:
    """Run ``condor_annex ARGS`` under pyinstrument; returns the text report."""
    out = RESULTS_DIR / out_name
    p = subprocess.run([sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out),
                        str(moto_rows.CLI), *args], capture_output=True, text=True,
                       env=env.child_env(), timeout=600)
    if p.returncode:
        raise RuntimeError(f"pyinstrument {' '.join(args)}: {p.stderr[-1000:]}")
    return out.read_text()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    ap.add_argument("--count", type=int, default=1000, help="instances to create (1000)")
    a = ap.parse_args(argv)
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        print("pyinstrument is not installed: .venv/bin/pip install pyinstrument",
              file=sys.stderr)
        return 2
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with env.isolated_home() as home, env.moto_server(home) as endpoint:
        moto_rows.fresh_account(endpoint, home)
        for args, name in (
                (["create", "prof", "--count", str(a.count), "--duration", "1h", "--no-owner",
                  "--json"], f"profile-create-n{a.count}.txt"),
                (["status", "--json"], f"profile-status-n{a.count}.txt")):
            print(profile(args, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
