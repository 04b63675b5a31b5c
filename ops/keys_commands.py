"""``loopline keys``: the Ed25519 key pairs that sign checkpoints and verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.signing.keys import SETTINGS, write_key_pair

app = typer.Typer()
keys_app = typer.Typer(help="Signing keys of the trainer and the pusher.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()

HOLDERS = {
    "trainer": ("the trainer", "the pusher, serving, operators"),
    "pusher": ("the pusher", "serving, operators"),
}


@keys_app.command("new")
def keys_new(
    out: Annotated[Path, typer.Option(file_okay=False, help="Directory to write the keys to.")],
    force: Annotated[bool, typer.Option(help="Overwrite keys already there.")] = False,
) -> None:
    """Write a fresh key pair for the trainer and one for the pusher, and say who holds what."""
    table = Table(title=f"keys in {out}")
    for column in ("file", "setting", "held by"):
        table.add_column(column)
    for signer, (private_setting, public_setting) in SETTINGS.items():
        files = write_key_pair(out, signer, overwrite=force)
        owner, readers = HOLDERS[signer]
        table.add_row(str(files.private), f"LOOPLINE_{private_setting.upper()}", f"{owner} only")
        table.add_row(str(files.public), f"LOOPLINE_{public_setting.upper()}", readers)
    console.print(table)
    console.print("A setting takes the file's path or its content. Keep the .key files secret.")
