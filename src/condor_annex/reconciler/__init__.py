"""The reconciler: observe (a :class:`~condor_annex.reconciler.snapshot.Snapshot`), plan (the
pure :func:`~condor_annex.reconciler.plan.plan`), execute (:mod:`~condor_annex.reconciler.actions`),
record."""
