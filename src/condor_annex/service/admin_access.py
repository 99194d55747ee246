"""What ``create`` adds to an annex so that its owner can run HTCondor's admin tools on its
nodes (``condor_off -annex NAME``, ``condor_off -peaceful``, ``condor_drain``,
``condor_config_val -rset``): the annex's own signing key and ``--config-dir`` files in its
bundle, and the administrator token in the owner's token directory
(:mod:`condor_annex.pool.annex_admin`).  The token is removed when the annex ends
(:func:`condor_annex.reconciler.ending.end_annex_resources`, which ``off`` and the reconciler's
ending share).
"""

from __future__ import annotations

import logging

from condor_annex.model import AnnexSpec
from condor_annex.pool import annex_admin, configs
from condor_annex.providers.base import Provider
from condor_annex.service.context import Context

log = logging.getLogger(__name__)


def bundle_extras(ctx: Context, provider: Provider, spec: AnnexSpec, adding: bool) -> dict:
    """The keyword arguments of :func:`condor_annex.pool.configs.annex_bundle` that are not
    the annex's settings: its signing key and administrator identity, and its
    ``--config-dir`` files.

    A new annex gets a new random key.  Adding instances to a live annex keeps its key (its
    running nodes and the owner's token use it) and, without ``--config-dir``, its files
    (S3 GetObject of the stored bundle: a read, nothing is made).

    Raises:
        ProviderError: the stored bundle could not be read.
    """
    kept = {"admin_key": "", "admin_identity": "", "extra_config": ()}
    if adding:
        stored = provider.get_bundle(spec.name)
        if stored is not None:
            kept = configs.bundle_extras(stored, spec.name)
    key = kept["admin_key"] or annex_admin.new_signing_key()
    identity = kept["admin_identity"] or annex_admin.admin_identity(annex_admin.local_owner(),
                                                                   spec.name)
    return {"admin_key": key, "admin_identity": identity,
            "extra_config": spec.config_files or kept["extra_config"]}


def install_token(ctx: Context, name: str, extras: dict) -> None:
    """Write the annex's administrator token (signed by the key in ``extras``) into the owner's
    token directory, after the annex was created.  A failure does not undo the annex (it runs
    as asked); the user is told the admin tools will not reach its nodes and why."""
    try:
        token = annex_admin.mint_admin_token(extras["admin_key"], name,
                                             extras["admin_identity"], ctx.trust_domain)
        path = annex_admin.write_admin_token(name, token, ctx.knobs)
        del token
        log.info("annex %s: administrator token written to %s", name, path)
    except Exception as e:   # noqa: BLE001 - the annex itself was created
        ctx.notify(f"annex {name}: could not write its administrator token ({e}); HTCondor's "
                   "admin tools (condor_off -annex) will not reach its nodes")
