"""`python -m shazip`: the same as the `shazip` command."""

from shazip.cli import main

main()
