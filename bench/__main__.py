import sys

from bench.cli import main

if __name__ == "__main__":   # not when a spawned worker re-imports this module
    sys.exit(main())
