"""``condor_annexd``, the annex daemon: the reconciler forever (issue 11)."""
