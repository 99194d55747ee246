"""The classic ``condor_annex`` command line (``-annex-name N -count K``, ``-status``, ``off``).

Recognised when the first argument is a single-dash option (see :func:`is_classic`); translated
to the same service calls as the modern verbs (:mod:`condor_annex.service.annex`).  Follows the
original tool's ``annex_main`` (reference §1): options are matched by unique prefix (``-annex``
means ``-annex-name``), ``-duration`` and ``-idle`` are decimal hours, a create asks for
confirmation unless ``-yes``, and the bare words ``status`` and ``off`` end the options.

Differences from the original, all deliberate (reference §10):

* every input is validated before any cloud call; bad input is one line naming the flag and the
  fix, exit status 2 (:class:`~condor_annex.errors.BadInputError`), and nothing is created;
* an ambiguous prefix is an error instead of "first option listed wins";
* annex names are checked (at most 27 characters of ``[A-Za-z0-9-]``, so no ``_``);
* ``-no-owner`` takes no argument (the original skipped the next one);
* ``-annex-name N -duration H`` refuses an unknown annex and never changes the annex's type;
* ``off`` ends one annex completely (instances, fleets, lease and bundle), matched by exact
  name, and requires ``-annex-name``; nodes in the pool first get 30 s to leave it gracefully
  (as ``condor_off -annex`` would do), the rest are terminated;
* on-demand user data is sent; ``-config-dir DIR``'s files go into the bundle after ours
  (``config.d/60-user-<name>``: no symlinks or subdirectories, at most 1 MiB, checked before
  any cloud call; :mod:`condor_annex.service.config_dir`);
* a spot fleet (``-slots W``) stops placing instances at its lease end (``ValidUntil``)
  instead of five minutes after the request, its instances end with the lease (which
  ``-annex-name N -duration H`` moves, as ``extend`` does), it is tagged with the annex, its
  instances are launched from the launch template ``annex-<name>`` (IMDSv2, hop limit 1), and
  its config file is checked before any cloud call (see
  :mod:`condor_annex.providers.aws.fleet` for how the file and the command line combine);
* the knob ``ANNEX_DEFAULT_SUBNET_IDS`` places instances in subnets (the original had no
  subnet option; the modern ``create`` also takes ``--subnet-id``).

Where each part lives (one concept per module):

* :mod:`.classic_options` -- the syntax: the options table, ``-help``'s usage text, the parser;
* :mod:`.classic_values` -- one flag's value (decimal hours, owners, tags, user data, the Spot
  Fleet request config);
* :mod:`.classic_spec` -- the create request (on-demand or spot fleet) from the flags;
* :mod:`.classic_overrides` -- endpoint, key files and ``-aws-on-demand-*`` overrides of setup;
* :mod:`.classic_plan` -- the mode and the fully validated :class:`Plan` (no cloud call);
* :mod:`.classic_context` -- the service context and the plain output every run shares;
* :mod:`.classic_create`, :mod:`.classic_lease` (``-duration``, ``off``),
  :mod:`.classic_status`, :mod:`.classic_setup` -- running each mode, with the original's
  messages;
* this module -- recognising the classic syntax and dispatching to the mode's runner.
"""

from __future__ import annotations

from collections.abc import Callable

# Plan, make_plan, parse_args, match_option, confirm and classads_text are also this module's
# names: callers and tests reach the classic command line through ``cli.classic``.
from condor_annex.cli.classic_context import say
from condor_annex.cli.classic_create import confirm, run_create
from condor_annex.cli.classic_lease import run_off, run_update
from condor_annex.cli.classic_options import USAGE, ClassicArgs, match_option, parse_args
from condor_annex.cli.classic_plan import Plan, make_plan
from condor_annex.cli.classic_setup import run_check_setup, run_setup
from condor_annex.cli.classic_status import classads_text, run_status
from condor_annex.errors import UnknownAnnexError

__all__ = ["USAGE", "ClassicArgs", "Plan", "classads_text", "confirm", "is_classic",
           "make_plan", "match_option", "parse_args", "run"]

#: The runner of each mode of a :class:`Plan` (``help`` is handled by :func:`run` itself).
_RUNNERS: dict[str, Callable[[Plan], int]] = {
    "create": run_create, "update": run_update, "off": run_off, "status": run_status,
    "setup": run_setup, "check-setup": run_check_setup,
}


def is_classic(argv: list[str]) -> bool:
    """True when ``argv`` uses the classic single-dash syntax (e.g. ``-count 3``)."""
    return bool(argv) and argv[0].startswith("-") and not argv[0].startswith("--") \
        and argv[0] not in ("-h", "-v")


def run(argv: list[str]) -> int:
    """Run a classic invocation; returns the exit status (raises AnnexError, which
    :func:`condor_annex.cli.main.main` turns into one line and an exit status).

    ``-help`` prints the usage and returns 1, as the original did.
    """
    plan = make_plan(parse_args(argv))
    if plan.mode == "help":
        say(USAGE, end="")
        return 1
    try:
        return _RUNNERS[plan.mode](plan)
    except UnknownAnnexError as e:
        raise UnknownAnnexError(f"-annex-name: {e}") from None
