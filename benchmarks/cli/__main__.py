"""``python -m tangentless.benchmarks.cli``: the ``tangentless`` command."""
import sys

from . import main

sys.exit(main())
