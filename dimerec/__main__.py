import sys

from dimerec.cli import main

sys.exit(main())
