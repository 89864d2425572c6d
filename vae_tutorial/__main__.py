"""`python -m vae_tutorial train | evaluate | sample`: the command line of cli.py."""

import sys

from vae_tutorial.cli import main

if __name__ == "__main__":
    sys.exit(main())
