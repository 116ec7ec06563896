"""``python -m clusterbisect.cli``: the same entry point as the console script."""

from clusterbisect.cli import main

main()
