"""Autoscaled annexes from the classic command line (issue 13), whose options are the
original's: the knobs ``ANNEX_AUTOSCALE_MAX`` and ``ANNEX_AUTOSCALE_MIN`` (docs/autoscale.md).

With ``ANNEX_AUTOSCALE_MAX`` set, ``condor_annex -annex-name N -count K`` (on-demand) creates
an autoscaled annex of at most that many instances, starting with ``ANNEX_AUTOSCALE_MIN``
instances when that knob is set (0 allowed), else with ``-count K``.
"""

from __future__ import annotations

import dataclasses

from condor_annex import config
from condor_annex.errors import BadInputError
from condor_annex.model import AnnexSpec
from condor_annex.service.autoscale_create import AutoscaleBounds, parse_bounds


def classic_bounds(knobs: dict[str, str], region: str | None,
                   spec: AnnexSpec) -> tuple[AnnexSpec, AutoscaleBounds] | None:
    """The autoscaled form of a classic on-demand create, or None when
    ``ANNEX_AUTOSCALE_MAX`` is not set.

    Returns:
        (the spec starting with the ``--min`` instances, the bounds).

    Raises:
        BadInputError: a knob that is not a whole number in range, ``ANNEX_AUTOSCALE_MAX``
            below the minimum (naming the knobs, or ``-count``).
    """
    top, low = config.autoscale_knobs(knobs, region)
    if top is None:
        if low is not None:
            raise BadInputError(f"{config.AUTOSCALE_MIN_KNOB}: only with "
                                f"{config.AUTOSCALE_MAX_KNOB} set; set both, or remove it")
        return None
    min_flag = config.AUTOSCALE_MIN_KNOB if low is not None else "-count"
    bounds = parse_bounds(top, low if low is not None else str(spec.count),
                          max_flag=config.AUTOSCALE_MAX_KNOB, min_flag=min_flag,
                          autoscale_flag=config.AUTOSCALE_MAX_KNOB)
    return dataclasses.replace(spec, count=bounds.min_count), bounds
