"""The use cases, one namespace for the command lines: create, status, extend, off, the waits,
setup.  Cloud-neutral; called by every CLI syntax.  Each lives in its own module; this one only
re-exports them:

- create (``create_annex``, ``create_spot_annex``, ``CreateResult``, ``uses_annex_role``):
  :mod:`condor_annex.service.create`; its rollback: :mod:`condor_annex.service.rollback`; what it
  refuses before any cloud call (``check_spot``, ``check_subnets``):
  :mod:`condor_annex.service.create_checks`;
- status (``annex_status``, ``annex_instances``): :mod:`condor_annex.service.status`;
- off (``end_annex``, ``EndResult``): :mod:`condor_annex.service.end`;
- extend (``extend_annex``, ``extend_lease``, ``ExtendResult``, ``bundle_settings``):
  :mod:`condor_annex.service.extend`;
- the waits (``wait_for_join``, ``wait_for_end``): :mod:`condor_annex.service.waits`;
- setup (``setup_cloud``, ``teardown_cloud``, ``check_setup``): :mod:`condor_annex.service.setup`;
- an annex by name (``known_annexes``, ``unknown_annex``): :mod:`condor_annex.service.names`;
- what several share (the token's margin, a lease end's whole second, setup's outputs or None):
  :mod:`condor_annex.service.common`.

Why this module stays: the command lines (cli/annex.py, the classic syntax's cli/classic_*.py,
cli/demo.py), the benchmarks and the e2e tests call ``svc.create_annex(...)``,
``svc.end_annex(...)``, ``svc.wait_for_join(...)``: one ``svc`` namespace of use cases reads as
what each command does, and one import line per command keeps them short.  Code inside the
package and the unit/aws tests import from the concept modules instead (they need one or two
names each).  Nothing here has behaviour: a test that patches a use case's helper patches it
where it is looked up, in its own module (e.g. ``condor_annex.service.create.roll_back``).
Nothing below service imports this module, and none of the modules above imports it back, so
there is no import circle (tests/unit/test_imports.py).
"""

from __future__ import annotations

from condor_annex.service.common import TOKEN_MARGIN_SECONDS
from condor_annex.service.create import (SETUP_PROFILE_PATH, CreateResult, create_annex,
                                         create_spot_annex, uses_annex_role)
from condor_annex.service.create_checks import SUBNET_KNOB, check_spot, check_subnets
from condor_annex.service.end import EndResult, end_annex
from condor_annex.service.extend import ExtendResult, bundle_settings, extend_annex, extend_lease
from condor_annex.service.names import known_annexes, unknown_annex
from condor_annex.service.setup import check_setup, setup_cloud, teardown_cloud
from condor_annex.service.status import annex_instances, annex_status
from condor_annex.service.waits import wait_for_end, wait_for_join

__all__ = [
    "SETUP_PROFILE_PATH", "SUBNET_KNOB", "TOKEN_MARGIN_SECONDS",
    "CreateResult", "EndResult", "ExtendResult",
    "annex_instances", "annex_status", "bundle_settings", "check_setup", "check_spot",
    "check_subnets", "create_annex", "create_spot_annex", "end_annex", "extend_annex",
    "extend_lease", "known_annexes", "setup_cloud", "teardown_cloud", "unknown_annex",
    "uses_annex_role", "wait_for_end", "wait_for_join",
]
