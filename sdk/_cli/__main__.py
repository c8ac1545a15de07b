"""`python -m ponder._cli`: the same command line as `ponder`."""

from ponder._cli import main

main()
