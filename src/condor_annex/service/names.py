"""Annexes by name: the names the cloud knows (:func:`known_annexes`), and the error for a
command naming an annex that does not exist (:func:`unknown_annex`, with the closest names).
Used by ``status NAME``, ``off``, ``extend`` and ``logs``.
"""

from __future__ import annotations

import difflib

from condor_annex.errors import NotSetUpError, ProviderError, UnknownAnnexError
from condor_annex.providers.base import Provider


def known_annexes(provider: Provider) -> list[str]:
    """Names of every annex with a live instance or a lease (one DescribeInstances pass and
    one lease listing), sorted."""
    names = {i.annex_name for i in provider.query_instances().values() if i.alive}
    try:
        names |= {lease.annex_name for lease in provider.list_leases()}
    except NotSetUpError:
        pass
    return sorted(n for n in names if n)


def unknown_annex(provider: Provider, name: str) -> UnknownAnnexError:
    """The error for a command naming an annex that does not exist, with the closest names.

    Returns (does not raise) an :class:`UnknownAnnexError`: exit 2, one line.
    """
    try:
        close = difflib.get_close_matches(name, known_annexes(provider), n=3, cutoff=0.5)
    except ProviderError:
        close = []
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownAnnexError(f"annex '{name}' does not exist (no instance, fleet, lease or "
                             f"bundle); {hint}see 'condor_annex status'")
