"""condor-annex: leased cloud execute nodes for an HTCondor pool.

This package's top level imports nothing, so that the instance-side agent
(:mod:`condor_annex.agent`) and the lease enforcer (:mod:`condor_annex.lease`)
can be installed alone.
"""

__version__ = "0.1.0"
