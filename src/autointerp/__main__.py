import sys

from autointerp.cli import main

sys.exit(main())
