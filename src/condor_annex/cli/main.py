"""``condor_annex`` entry point: the only place an AnnexError becomes an exit status.

Exit status: 0 success, 1 failure, 2 bad input (nothing created in the cloud), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from condor_annex.errors import AnnexError, UnknownAnnexError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as BadInputError (one line, exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        from condor_annex.errors import BadInputError
        raise BadInputError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The modern noun-verb parser: create, status, off, extend, setup, check-setup, local."""
    from condor_annex.cli import annex, local

    parser = _Parser(prog="condor_annex",
                     description="Grow an HTCondor pool with leased cloud instances.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log AWS calls (DEBUG)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    annex.add_verbs(sub)
    local.add_verbs(sub)
    return parser


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run the verb; returns the exit status (raises AnnexError)."""
    from condor_annex.cli import classic
    if classic.is_classic(argv):
        return classic.run(argv)
    parser = build_parser()
    if not argv:   # nothing asked: the usage is the answer, on stderr (exit 2, as bad input)
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UnknownAnnexError as e:
        raise UnknownAnnexError(f"NAME: {e}") from None


def _one_line(text: str) -> str:
    """``text`` with control characters (newlines first) shown as escapes."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]",
                  lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = run(argv)
    except AnnexError as e:
        # One line whatever a message quotes (argparse echoes arguments as typed).
        print(f"condor_annex: {_one_line(str(e))}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("condor_annex: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
