"""``python3 -m condor_annex.agent``: run the bootstrap agent."""

import sys

from condor_annex.agent.bootstrap import main

sys.exit(main())
