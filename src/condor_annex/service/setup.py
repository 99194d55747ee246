"""Use cases setup, teardown and check-setup: the account-wide pieces every annex uses (the
stack's bucket, security group, instance profile, lease enforcer; the key pair), and their
record in the user's config.
"""

from __future__ import annotations

from collections.abc import Callable

from condor_annex.service.context import Context


def setup_cloud(ctx: Context, progress: Callable[[str], None] | None = None):
    """Run ``setup`` and record its outputs in the user's config (a managed block, replaced on
    re-run).  Returns the :class:`SetupOutputs`."""
    from condor_annex import config
    outputs = ctx.provider().setup(progress=progress)
    config.write_block("setup", config.setup_knobs(outputs))
    return outputs


def teardown_cloud(ctx: Context, *, force: bool = False):
    """Undo ``setup``: delete what it made (bucket contents, the stack, the key pair) and its
    block in the user's config.  Returns the :class:`SetupOutputs` that were removed.

    Raises:
        NotSetUpError: setup outputs are missing (nothing to remove).
        InvalidRequestError: annex leases remain and ``force`` is False (their lease enforcer
            would be deleted and their instances would run unbounded).
        ProviderError: the deletion failed or timed out.
    """
    from condor_annex import config
    outputs = ctx.setup_outputs()
    ctx.provider(outputs).teardown(outputs, force=force)
    config.remove_block("setup")
    return outputs


def check_setup(ctx: Context) -> list[tuple[str, bool, str]]:
    """Inspect what ``setup`` made; one (resource, ok, detail) row per resource."""
    outputs = ctx.setup_outputs()
    return ctx.provider(outputs).check_setup(outputs)
