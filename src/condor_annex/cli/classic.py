"""The classic ``condor_annex`` command line (``-count``, ``-annex-name``, ...).

Recognised when the first argument is a single-dash option; translated to the same service
calls as the modern verbs.
"""

from __future__ import annotations


def is_classic(argv: list[str]) -> bool:
    """True when ``argv`` uses the classic single-dash syntax (e.g. ``-count 3``)."""
    return bool(argv) and argv[0].startswith("-") and not argv[0].startswith("--") \
        and argv[0] not in ("-h", "-v")


def run(argv: list[str]) -> int:
    """Run a classic invocation."""
    from condor_annex.errors import BadInputError
    raise BadInputError(f"{argv[0]}: the classic syntax is not supported yet; use "
                        "'condor_annex create NAME --count N'")
