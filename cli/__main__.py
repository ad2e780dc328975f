"""`python -m dre.cli` runs the `dre` command."""

from .main import main

main()
