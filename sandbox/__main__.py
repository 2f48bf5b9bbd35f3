"""`python -m sandbox --credential KEY:SECRET`: the fake Events API alone."""

from sandbox.cli import main

main()
