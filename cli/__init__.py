"""The `dre` command line."""
