import sys

from mulde.cli import main

sys.exit(main())
