"""``python -m ssd_torch.demo``, the entry point of ``make demo``; the demo itself is ``ssd_torch.cli.demo``."""
import sys

from ssd_torch.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
