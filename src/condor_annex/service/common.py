"""What several use cases share: a lease end's whole second, the annex's IDTOKEN for a lease
end, and setup's outputs when setup has run.  Used by :mod:`~condor_annex.service.create`,
:mod:`~condor_annex.service.extend` (the token and its lifetime), and
:mod:`~condor_annex.service.status`, :mod:`~condor_annex.service.waits`,
:mod:`~condor_annex.service.create_checks` and :mod:`~condor_annex.service.logs` (setup's outputs,
which may be missing).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from condor_annex.errors import BadInputError
from condor_annex.model import SetupOutputs, utcnow
from condor_annex.pool.tokens import mint_annex_token
from condor_annex.service.context import Context


#: Extra token lifetime beyond the lease end (seconds): the clock skew allowed between this
#: host and the pool (at most 5 min).  The token lives the lease, never longer; ``extend``
#: re-mints it for the new end.
TOKEN_MARGIN_SECONDS = 300


def whole_second(when: datetime) -> datetime:
    """``when`` rounded up to a whole second (what a lease's schedule and tags hold)."""
    return datetime.fromtimestamp(math.ceil(when.timestamp()), timezone.utc)


def mint_for(ctx: Context, name: str, end: datetime) -> str:
    """The annex's IDTOKEN, living until ``end`` plus :data:`TOKEN_MARGIN_SECONDS`."""
    lifetime = math.ceil((end - utcnow()).total_seconds()) + TOKEN_MARGIN_SECONDS
    return mint_annex_token(name, max(lifetime, TOKEN_MARGIN_SECONDS),
                            command=ctx.token_command)


def outputs_or_none(ctx: Context) -> SetupOutputs | None:
    """Setup's recorded outputs, or None when setup has not run (or its record is unusable):
    for the use cases that work without setup (status, waits, logs, a subnet check)."""
    try:
        return ctx.setup_outputs()
    except BadInputError:
        return None
