import sys

from pagmfr.cli import main

sys.exit(main())
