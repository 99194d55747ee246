"""``create NAME --autoscale --max N [--min M]``: the flags of a demand-driven annex (issue 13).

condor_annexd then grows the annex when idle jobs that could run on it have outnumbered its
idle-or-booting slots for ``ANNEX_AUTOSCALE_SETTLE`` (30 s), never beyond ``--max``, the
lease or the budget; nodes above ``--min`` leave through their idle timeout (docs/autoscale.md).
"""

from __future__ import annotations

from condor_annex.errors import BadInputError
from condor_annex.service.autoscale_create import AutoscaleBounds, parse_bounds


def add_flags(p) -> None:
    """Register ``--autoscale``, ``--max`` and ``--min`` on the create parser."""
    p.add_argument("--autoscale", action="store_true",
                   help="grow the annex from the queue (condor_annexd): needs --max; starts "
                        "with --min instances")
    p.add_argument("--max", default=None, metavar="N",
                   help="with --autoscale: most instances the annex grows to")
    p.add_argument("--min", default=None, metavar="M",
                   help="with --autoscale: instances it starts with and keeps (no idle "
                        "shutdown); default 0")


def bounds_from_args(args) -> AutoscaleBounds | None:
    """The bounds of ``create --autoscale`` (None without it).

    Raises:
        BadInputError: ``--max``/``--min`` without ``--autoscale``; ``--autoscale`` with
            ``--count``, ``--spot`` or without ``--max``; bad values; ``--max`` below ``--min``.
    """
    if not getattr(args, "autoscale", False):
        for flag, value in (("--max", getattr(args, "max", None)),
                            ("--min", getattr(args, "min", None))):
            if value is not None:
                raise BadInputError(f"{flag}: only with --autoscale, e.g. create NAME "
                                    "--autoscale --max 4 --min 0")
        return None
    if args.spot:
        raise BadInputError("--autoscale: on-demand annexes only; drop --spot")
    if args.count is not None:
        raise BadInputError("--count: an autoscaled annex starts with --min instances (default "
                            "0) and grows to --max; drop --count")
    return parse_bounds(args.max, args.min)
