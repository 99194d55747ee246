"""Undoing one launch request after a failed create: what carries its client token is ended
(looked for again while EC2's listings lag), then, for an annex the create made, its bundle, role
and lease (:func:`roll_back`, called by :mod:`condor_annex.service.create`).
"""

from __future__ import annotations

import logging

from condor_annex.errors import ProviderError
from condor_annex.model import BundleRef, LeaseRef
from condor_annex.providers.base import Provider
from condor_annex.reconciler import ending
from condor_annex.service.context import Context

log = logging.getLogger(__name__)


def roll_back(ctx: Context, provider: Provider, name: str, client_token: str, *,
               error: BaseException | None, new_annex: bool, lease: LeaseRef,
               bundle: BundleRef) -> None:
    """Undo one launch request: end what carries its token, then (a new annex only) its
    bundle and then its lease.

    A failure that may have launched something (a lost reply, a 5xx, Ctrl-C while the call was
    out: anything but a definite refusal) is looked for again during ``ctx.listing_lag_s``
    seconds, with jittered re-queries, since EC2's listings lag its launches.  When ending
    fails, the lease stays and ends the annex on time; the launch's own error is the one
    raised by the caller.
    """
    definite = isinstance(error, ProviderError) and not error.ambiguous and not error.retryable
    wait_s = 0.0 if definite else ctx.listing_lag_s
    try:
        ended = _end_request(ctx, provider, name, client_token, wait_s=wait_s)
        if new_annex:
            # Bundle and role before lease: a kill -9 in between leaves a lease, never a lone
            # bundle or role.
            provider.delete_bundle(bundle)
            provider.delete_annex_role(name)
            provider.delete_lease(lease)
        if ended:
            log.info("annex %s: rolled back launch %s: ended %s", name, client_token, ended)
    except Exception:   # noqa: BLE001 - the launch's own error is the one to raise
        log.warning("annex %s: could not roll back launch %s; its lease stays and ends it",
                    name, client_token, exc_info=True)


def _end_request(ctx: Context, provider: Provider, name: str, client_token: str, *,
                 wait_s: float) -> list[str]:
    """End what carries ``client_token``
    (:func:`condor_annex.reconciler.ending.end_launch_request`), telling the user why it
    looks again when it does."""
    if wait_s:
        ctx.notify(f"annex {name}: the launch failed; looking for up to {wait_s:.0f} s for "
                   "anything it started (EC2's listings lag) to end it")
    return ending.end_launch_request(provider, name, client_token, wait_s=wait_s)
