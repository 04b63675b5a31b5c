"""``loopline keys``: the Ed25519 key pairs that sign checkpoints, verdicts and Commands,
and the holdout slice's secret key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.holdout import new_key
from loopline.signing.commands import MONITOR, write_operator_pair
from loopline.signing.keys import SETTINGS, write_key_pair, write_secret

app = typer.Typer()
keys_app = typer.Typer(
    help="Keys of the trainer, the pusher, operators and the holdout slice.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
console = Console()

HOLDERS = {
    "trainer": ("the trainer", "the pusher, serving, operators"),
    "pusher": ("the pusher", "serving, operators"),
}


@keys_app.command("new")
def keys_new(
    out: Annotated[Path, typer.Option(file_okay=False, help="Directory to write the keys to.")],
    operator: Annotated[
        list[str] | None,
        typer.Option(help="Write only an operator key pair under this name (repeatable)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite keys already there.")] = False,
) -> None:
    """Write fresh keys and say who holds what: the trainer's and the pusher's pairs, the
    holdout key and the streams' monitor's operator pair; or, with ``--operator NAME``,
    only that operator's pair."""
    table = Table(title=f"keys in {out}")
    for column in ("file", "setting", "held by"):
        table.add_column(column)
    if not operator:
        for signer, (private_setting, public_setting) in SETTINGS.items():
            files = write_key_pair(out, signer, overwrite=force)
            owner, readers = HOLDERS[signer]
            table.add_row(
                str(files.private), f"LOOPLINE_{private_setting.upper()}", f"{owner} only"
            )
            table.add_row(str(files.public), f"LOOPLINE_{public_setting.upper()}", readers)
        holdout = write_secret(out / "holdout.key", new_key(), overwrite=force)
        table.add_row(str(holdout), "LOOPLINE_HOLDOUT_KEY", "the trainer and the pusher")
    for name in operator or [MONITOR]:
        files = write_operator_pair(out, name, overwrite=force)
        owner = "the streams workers" if name == MONITOR else f"operator {name}"
        table.add_row(str(files.private), "LOOPLINE_OPERATOR_KEY", f"{owner} only")
    table.add_row(
        str(out / "operators"),
        "LOOPLINE_OPERATOR_KEYS",
        "the trainer, the pusher, operators (every reader of control)",
    )
    console.print(table)
    console.print(
        "A setting takes the file's path or its content. Keep the .key files secret; "
        "an operator's name is its key file's name."
    )
