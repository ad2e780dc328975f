"""Entry point of the `dre` command (filled in by the CLI module)."""


def main() -> None:
    raise SystemExit("dre: not built yet")
