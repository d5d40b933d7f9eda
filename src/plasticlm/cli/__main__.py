import sys

from plasticlm.cli import main

if __name__ == "__main__":
    sys.exit(main())
