import sys

from cdln.cli import main

sys.exit(main())
