"""The `dre` command: entry point, global options and the one-line error policy."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import click
from dre.protocol.errors import DreError
from dre.storage.repo import Repo, default_home

from . import blocks, keys, node_cli, packages, search_cli, tokens_cli

__all__ = ["cli", "main"]


class Context:
    """What every command needs: where the node home is."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def open_repo(self) -> Repo:
        """Open the node home, or fail with a one-line hint to run `dre init`."""
        return Repo.open(self.home)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Node home directory (default: $DRE_HOME or the per-user data directory).",
)
@click.version_option(package_name="dre-registry", prog_name="dre")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """DRE Registry: a peer-to-peer, content-addressed package registry node."""
    ctx.obj = Context(home if home is not None else default_home())


blocks.register(cli)
packages.register(cli)
keys.register(cli)
node_cli.register(cli)
tokens_cli.register(cli)
search_cli.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure becomes one line on stderr and a non-zero exit code."""
    try:
        cli.main(args=argv, prog_name="dre", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("dre: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"dre: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except DreError as exc:
        click.echo(f"dre: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("dre: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`dre cat X | head`): not an error worth a message.
        sys.stderr.close()
        sys.exit(141)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            sys.exit(141)
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"dre: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    sys.exit(0)
