"""What ``create``, ``extend`` and ``off`` write to the state store
(:mod:`condor_annex.state.store`), so the reconciler can finish or undo what a killed command
started (issue 11).

The one write that gates the cloud is :func:`record_create`: the annex's desired state and the
launch request with its client token, written **before** anything is made; when it fails the
command stops with nothing created.  The writes after a cloud call (:func:`record_outcome`,
:func:`record_lease_end`, :func:`record_ended`) only log a warning on failure: the cloud already
changed, and a later pass finds it by the client token and the annex's tags.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from condor_annex.errors import AnnexError
from condor_annex.model import AnnexSpec, SpotSpec
from condor_annex.state.lifecycle import Lifecycle
from condor_annex.state.store import default_path, open_store

log = logging.getLogger(__name__)


def spec_json(spec: AnnexSpec) -> dict:
    """The desired state kept for an annex: the spec's fields, JSON-ready, with the user data
    replaced by its size in bytes (it may hold secrets and is up to 16 KB), and the
    ``--config-dir`` files by their names (their content is in the bundle)."""
    data = dataclasses.asdict(spec)
    user_data = data.pop("user_data")
    data["user_data_bytes"] = None if user_data is None else len(user_data)
    data["config_files"] = [name for name, _content in spec.config_files]
    return data


def record_create(knobs: dict[str, str], spec: AnnexSpec, *, kind: str, lease_end: datetime,
                  client_token: str, launch_prices: dict | None = None) -> None:
    """Write the annex's desired state and the launch request (state ``recorded``) before the
    create touches the cloud.

    Args:
        knobs: the user's knobs (``ANNEX_STATE_FILE``).
        spec: the validated request; ``spec.count`` is the launch's count or capacity.
        kind: ``on-demand``, ``ec2-fleet`` or ``spot-fleet``.
        lease_end: the lease end the annex will have (aware UTC).
        client_token: the token the launch call will send.
        launch_prices: the prices at create, kept as the spec's ``launch_prices``
            (:func:`condor_annex.service.create_prices.prices_to_keep`).

    Raises:
        BadInputError: the state file is corrupt or from a newer version (nothing created).
        AnnexError: the state file cannot be written (nothing created).
    """
    try:
        with open_store(knobs) as store:
            store.put_annex(spec.name, {**spec_json(spec), "launch_prices": launch_prices or {}},
                            requested=spec.count,
                            lease_end=lease_end)
            store.record_launch(client_token, spec.name, kind, spec.count)
    except (sqlite3.Error, OSError) as e:
        raise AnnexError(f"annex '{spec.name}': cannot write the state file "
                         f"{default_path(knobs)} ({e}); nothing was created") from None


def record_outcome(knobs: dict[str, str], annex: str, client_token: str, state: str,
                   instance_ids: Sequence[str] = ()) -> None:
    """After the launch call: the request's state (``launched``, ``failed``, ``rolled-back``)
    and the instances it returned (lifecycle REQUESTED).  A failure is logged, not raised."""
    try:
        with open_store(knobs) as store:
            store.set_launch_state(client_token, state)
            store.add_instances(annex, instance_ids, state=Lifecycle.REQUESTED.value,
                                launch_token=client_token, reason="returned by the launch call")
    except (AnnexError, sqlite3.Error, OSError, KeyError) as e:
        log.warning("annex %s: could not record launch %s as %s in the state file: %s",
                    annex, client_token, state, e)


def record_lease_end(knobs: dict[str, str], annex: str, lease_end: datetime) -> None:
    """After ``extend`` moved the lease: its new end.  A failure is logged, not raised."""
    try:
        with open_store(knobs) as store:
            store.set_lease_end(annex, lease_end)
    except (AnnexError, sqlite3.Error, OSError) as e:
        log.warning("annex %s: could not record its lease end in the state file: %s", annex, e)


def record_ended(knobs: dict[str, str], annex: str) -> None:
    """After ``off`` ended the annex in the cloud: mark it ended.  A failure is logged, not
    raised (the reconciler ends an annex whose lease is gone)."""
    try:
        with open_store(knobs) as store:
            store.end_annex(annex)
    except (AnnexError, sqlite3.Error, OSError) as e:
        log.warning("annex %s: could not mark it ended in the state file: %s", annex, e)


def record_off(knobs: dict[str, str], annex: str) -> None:
    """Before ``off`` touches the cloud: its desired state ("ended"), so a pass finishes an
    ``off`` killed part-way.  A failure is logged, not raised (``off`` must work without a
    usable state file; the lease ends what a killed ``off`` leaves)."""
    try:
        with open_store(knobs) as store:
            store.request_off(annex)
    except (AnnexError, sqlite3.Error, OSError) as e:
        log.warning("annex %s: could not record the off in the state file: %s", annex, e)


def record_spot(knobs: dict[str, str], annex: str, spot: SpotSpec) -> None:
    """After a spot create: its EC2 Fleet settings (API, fleet type, instance types and
    weights, allocation strategy) in the annex's spec, so interrupted capacity can be replaced
    (:mod:`condor_annex.service.replace`).  Spot Fleet configs and user data are not kept (they
    may hold the user's secrets).  A failure is logged, not raised."""
    data = {"api": spot.api, "fleet_type": spot.fleet_type,
            "instance_types": [list(t) for t in spot.instance_types],
            "allocation_strategy": spot.allocation_strategy, "max_price": spot.max_price}
    try:
        with open_store(knobs) as store:
            store.update_spec(annex, {"spot": data})
    except (AnnexError, sqlite3.Error, OSError) as e:
        log.warning("annex %s: could not record its spot settings: %s", annex, e)


def annex_live(knobs: dict[str, str], annex: str) -> bool:
    """True when the store knows the annex and it has not ended (False when the state file
    cannot be read)."""
    try:
        with open_store(knobs) as store:
            record = store.annex(annex)
    except (AnnexError, sqlite3.Error, OSError):
        return False
    return record is not None and record.ended_at is None
