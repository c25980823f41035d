"""``sternway locks`` and ``sternway unlock``: who holds which key, who waits, and freeing a
key whose holder ended ROLLBACK_FAILED."""

from __future__ import annotations

import getpass

import click

from sternway.starter._session import Session, command

__all__ = ["locks_command", "unlock_command"]


@click.command(name="locks")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
async def locks_command(session: Session, as_json: bool) -> int:
    """List every held key: its holders, and the runs waiting for it in order."""
    from sternway._locks import list_locks

    states = await list_locks(await session.client())
    if as_json:
        session.print_json({"locks": [s.model_dump(mode="json") for s in states]})
        return 0
    if not states:
        session.out.print("no run holds or waits for a lock")
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("key", "limit", "held by", "since", "waiting (in order)"):
        table.add_column(column, overflow="fold")
    for state in states:
        table.add_row(
            state.key,
            str(max((h.limit for h in state.holders), default=1)),
            ", ".join(h.run_id for h in state.holders) or "-",
            min(h.since for h in state.holders).strftime("%Y-%m-%d %H:%M:%S")
            if state.holders
            else "",
            ", ".join(w.run_id for w in state.waiters)
            or (state.history[-1] if not state.holders and state.history else "-"),
        )
    session.out.print(table)
    return 0


@click.command(name="unlock")
@click.argument("key")
@click.option("--reason", required=True, help="why: kept in the lock's history")
@command
async def unlock_command(session: Session, key: str, reason: str) -> int:
    """Free KEY from a run that ended ROLLBACK_FAILED holding it (after fixing its target)."""
    from sternway._locks import unlock

    note = await unlock(await session.client(), key, reason, by=getpass.getuser())
    session.out.print(f"lock {key}: {note}")
    return 0
