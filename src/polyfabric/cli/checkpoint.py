"""`polyfabric checkpoint`: run inside a command task, saves $POLYFABRIC_CHECKPOINT_DIR as the
task's checkpoint (sdk/context.py does the work; docs/protocol.md, "Checkpoints")."""

from __future__ import annotations

from pathlib import Path

import click

from polyfabric.cli.output import emit

__all__ = ["checkpoint"]


@click.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The directory to save (default: $POLYFABRIC_CHECKPOINT_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print the saved checkpoint as JSON.")
def checkpoint(directory: Path | None, as_json: bool) -> None:
    """Save the task's checkpoint directory, atomically, with the coordinator.

    Run it inside a command task after writing files into $POLYFABRIC_CHECKPOINT_DIR. It returns
    once the coordinator holds the checkpoint durably (exit 0), or fails with the reason (exit 1:
    the attempt is no longer current, or the coordinator could not be reached). On the task's next
    attempt the directory holds exactly what was saved before the command starts."""
    from polyfabric.sdk.context import CheckpointError, NotInTask, task_context

    try:
        out = task_context().save_dir(directory)
    except (CheckpointError, NotInTask) as exc:
        raise click.ClickException(f"checkpoint not saved: {exc}") from None
    emit(out, as_json, lambda c: f"checkpoint {c.get('seq')} saved ({c.get('size')} bytes, sha256 {c.get('sha256')})")
