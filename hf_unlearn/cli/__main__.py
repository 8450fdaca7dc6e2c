"""`python -m hf_unlearn.cli ...` (what `torchrun` launches)."""

import sys

from . import main

sys.exit(main())
