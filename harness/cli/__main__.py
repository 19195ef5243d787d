"""``python -m harness.cli``: the same entry point as the ``varscale`` script (used by torchrun and the tests)."""
import sys

from harness.cli.main import main

sys.exit(main())
