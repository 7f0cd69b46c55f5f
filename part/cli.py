"""`part-cli`: one-off commands for people (the pipeline stages live in stages/)."""

from __future__ import annotations

import platform

import typer
from rich.table import Table

from part import __version__
from part.ui import guarded, stdout

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Pixel-reweighted Adversarial Training (PART): inspect the setup, evaluate checkpoints.",
)


def _print_version(value: bool) -> None:
    if value:
        stdout.print(f"part {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Pixel-reweighted Adversarial Training (PART)."""


@app.command()
@guarded
def info() -> None:
    """Versions, the compute device, and where each data set is found."""
    import torch
    import torchvision

    from part.data import SOURCES, find_source_root
    from part.device import resolve_device

    table = Table(title="part", show_header=False)
    table.add_row("part", __version__)
    table.add_row("python", platform.python_version())
    table.add_row("torch", torch.__version__)
    table.add_row("torchvision", torchvision.__version__)
    table.add_row("device (auto)", str(resolve_device("auto")))
    cuda = torch.cuda.is_available()
    table.add_row("CUDA", f"{torch.version.cuda} ({torch.cuda.get_device_name(0)})" if cuda
                  else f"not available (build: {torch.version.cuda or 'cpu'})")
    for source in SOURCES:
        if source == "synthetic":
            table.add_row("data: synthetic", "generated on demand")
            continue
        root = find_source_root(source)
        table.add_row(f"data: {source}", str(root) if root else
                      "not found locally (downloaded on first use where a network exists)")
    stdout.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
