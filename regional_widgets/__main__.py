"""``python -m regional_widgets``: the command line in `regional_widgets.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
