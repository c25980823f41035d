"""What a run would do, before it runs (``sternway plan``), and how a run's jobs hang together
(``sternway graph``).

The preview uses what a run uses: :meth:`Action.resolve` for the args and lock keys, and the
expression engine for ``each`` items and ``if`` conditions. An expression that reads only args
(and ``each`` variables the preview knows) is decided now; one that reads job outputs or the run
is "run time". Instances are named as the run names them (``per-host[web1].drain``).

Levels and rollbacks come from the order the interpreter keeps: a job starts when the jobs in
its ``after`` are done; the first jobs of a group start when the group does; the items of an
``each`` start with it (``concurrency`` at a time). ``rollback_if_fails`` lists the rollbacks a
failure of the job (after its retries) certainly runs, newest start first: the job itself and
every job it waits for, directly or not. Jobs that may run beside it are undone too if they had
started by then: ``rollback_if_started`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from sternway.workflows._expr import ExpressionError, render, roots, truthy
from sternway.workflows.models import (
    JobSpec,
    JobStatus,
    LockSpec,
    Plan,
    RunStatus,
    item_keys,
    parse_duration,
    secret_values,
)

if TYPE_CHECKING:
    from sternway.workflows._actions import Action

__all__ = ["RUN_TIME", "PlanView", "PlannedJob", "graph_text", "plan_graph", "preview", "run_graph"]

RUN_TIME = "run time"


class PlannedEach(BaseModel):
    """An ``each``: its variable, how many items (or "run time") and its window."""

    model_config = ConfigDict(populate_by_name=True)

    as_: str = Field(alias="as")
    items: int | str
    concurrency: int


class PlannedApproval(BaseModel):
    """An approval job's deadline (seconds, None, or "run time") and what happens at it."""

    timeout: float | str | None = None
    on_timeout: str = "fail"


class PlannedJob(BaseModel):
    """One job instance as the run will have it."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    kind: str
    after: list[str] = Field(default_factory=list)
    level: int = 0
    each: PlannedEach | str | None = None
    if_: bool | str | None = Field(default=None, alias="if")
    retry: dict[str, Any] = Field(default_factory=dict)
    approval: PlannedApproval | None = None
    has_rollback: bool = False
    rollback_if_fails: list[str] = Field(default_factory=list)
    rollback_if_started: list[str] = Field(default_factory=list)


class PlanView(BaseModel):
    """``sternway plan --json``: what a run of ``action`` with ``args`` would do."""

    action: str
    args: dict[str, Any]
    locks: list[LockSpec] = Field(default_factory=list)
    levels: list[list[str]] = Field(default_factory=list)
    jobs: list[PlannedJob] = Field(default_factory=list)


def _kind(spec: JobSpec) -> str:
    if spec.jobs is not None:
        return "group"
    return spec.execute.kind if spec.execute is not None else "python"


class _Builder:
    def __init__(self, plan: Plan, args: dict[str, Any], secrets: list[str]) -> None:
        self.plan = plan
        self.args = args
        self.secrets = secrets
        self.jobs: list[PlannedJob] = []
        # Leaves (jobs that do work): their direct dependencies among leaves, in start order.
        self.leaf_deps: dict[str, set[str]] = {}
        self.leaves: list[str] = []
        self.continue_on_error: set[str] = set()

    def decide(self, text: str, variables: Mapping[str, Any]) -> Any:
        """The value of an expression the args decide, or RUN_TIME."""
        known = {"args"} | {k for k, v in variables.items() if v is not _UNKNOWN}
        try:
            if not roots(text) <= known:
                return RUN_TIME
            return render(text, {"args": self.args, **variables})
        except ExpressionError as err:
            return f"error: {err}"

    def scope(
        self,
        specs: list[JobSpec],
        prefix: str,
        variables: dict[str, Any],
        start_deps: set[str],
        start_level: int,
    ) -> None:
        """Add the scope's jobs; ``start_deps`` are the leaves its first jobs wait for."""
        ends: dict[str, tuple[set[str], int]] = {}
        for spec in _in_start_order(specs):
            deps, level = set(start_deps), start_level
            for dep in spec.after:
                dep_leaves, dep_level = ends[dep]
                deps |= dep_leaves
                level = max(level, dep_level + 1)
            ends[spec.name] = self.node(spec, prefix, variables, deps, level)

    def node(
        self, spec: JobSpec, prefix: str, variables: dict[str, Any], deps: set[str], level: int
    ) -> tuple[set[str], int]:
        """Add ``spec``'s entries; the leaves that finish it and the level it ends at."""
        name = prefix + spec.name
        entry = PlannedJob(
            name=name,
            kind="each" if spec.each is not None else _kind(spec),
            after=[prefix + d for d in spec.after],
            level=level,
            retry=spec.retry.model_dump(mode="json"),
        )
        self.jobs.append(entry)
        if spec.if_ is not None:
            decided = self.decide(spec.if_, variables)
            entry.if_ = truthy(decided) if decided != RUN_TIME and not _error(decided) else decided
            if entry.if_ is False:
                return deps, level - 1  # skipped: nothing runs, dependants wait for nothing
        if spec.each is not None:
            return self.each(spec, entry, variables, deps, level)
        if spec.jobs is not None:
            entry.kind = "group"
            return self.group(spec, name, variables, deps, level)
        return self.leaf(spec, entry, variables, deps, level)

    def each(
        self,
        spec: JobSpec,
        entry: PlannedJob,
        variables: dict[str, Any],
        deps: set[str],
        level: int,
    ) -> tuple[set[str], int]:
        each = spec.each
        if each is None:
            return deps, level
        items = (
            self.decide(str(each.items), variables) if isinstance(each.items, str) else each.items
        )
        if not isinstance(items, list):
            entry.each = PlannedEach(as_=each.as_, items=RUN_TIME, concurrency=each.concurrency)
            keyed: list[tuple[str, Any]] = [("*", _UNKNOWN)]
        else:
            entry.each = PlannedEach(as_=each.as_, items=len(items), concurrency=each.concurrency)
            keyed = list(zip(item_keys(items, self.secrets), items, strict=True))
        ends: set[str] = set()
        end_level = level
        for key, item in keyed:
            instance = f"{entry.name}[{key}]"
            inner = {**variables, each.as_: item}
            if each.concurrency == 1 and ends:
                # One at a time: an item starts when the one before it is done.
                deps, level, ends = ends, end_level + 1, set()
            if spec.jobs is not None:
                self.jobs.append(
                    PlannedJob(
                        name=instance, kind="group", after=[entry.name], level=level, retry={}
                    )
                )
                leaves, last = self.group(spec, instance, inner, deps, level)
            else:
                child = PlannedJob(
                    name=instance,
                    kind=_kind(spec),
                    after=[entry.name],
                    level=level,
                    retry=spec.retry.model_dump(mode="json"),
                )
                self.jobs.append(child)
                leaves, last = self.leaf(spec, child, inner, deps, level)
            ends |= leaves
            end_level = max(end_level, last)
        return ends, end_level

    def group(
        self, spec: JobSpec, name: str, variables: dict[str, Any], deps: set[str], level: int
    ) -> tuple[set[str], int]:
        before = len(self.leaves)
        self.scope(spec.jobs or [], f"{name}.", variables, deps, level)
        inner = self.leaves[before:]
        if not inner:
            return deps, level - 1
        # The group is done when every leaf in it is: those no other leaf of it waits for.
        waited = set().union(*(self.leaf_deps[leaf] for leaf in inner))
        ends = {leaf for leaf in inner if leaf not in waited}
        return ends, max(self.level_of(leaf) for leaf in inner)

    def leaf(
        self,
        spec: JobSpec,
        entry: PlannedJob,
        variables: dict[str, Any],
        deps: set[str],
        level: int,
    ) -> tuple[set[str], int]:
        # A called action undoes its own jobs, as a unit, where the calling job stands.
        entry.has_rollback = spec.rollback is not None or entry.kind == "action"
        if entry.kind == "approval":
            params = (spec.execute.with_ if spec.execute else {}) or {}
            timeout = params.get("timeout")
            if isinstance(timeout, str) and "${{" in timeout:
                timeout = self.decide(timeout, variables)
            seconds: float | str | None = None
            if timeout == RUN_TIME or _error(timeout):
                seconds = timeout
            elif timeout not in (None, ""):
                try:
                    seconds = parse_duration(timeout)
                except ValueError:
                    seconds = str(timeout)
            entry.approval = PlannedApproval(
                timeout=seconds, on_timeout=str(params.get("on_timeout", "fail"))
            )
        self.leaf_deps[entry.name] = set(deps)
        self.leaves.append(entry.name)
        if spec.continue_on_error:
            self.continue_on_error.add(entry.name)
        return {entry.name}, level

    def level_of(self, name: str) -> int:
        return next(j.level for j in self.jobs if j.name == name)

    def finish(self) -> None:
        """Levels of leaves, and each leaf's rollbacks if it fails."""
        by_name = {j.name: j for j in self.jobs}
        ancestors: dict[str, set[str]] = {}
        for leaf in self.leaves:  # dependencies come first in this order
            found: set[str] = set()
            for dep in self.leaf_deps[leaf]:
                found |= {dep} | ancestors[dep]
            ancestors[leaf] = found
        order = {leaf: i for i, leaf in enumerate(self.leaves)}
        for leaf in self.leaves:
            job = by_name[leaf]
            if leaf in self.continue_on_error:
                continue  # its failure halts nothing and undoes nothing
            certain = ancestors[leaf] | {leaf}
            job.rollback_if_fails = [
                n
                for n in sorted(certain, key=lambda n: (by_name[n].level, order[n]), reverse=True)
                if by_name[n].has_rollback
            ]
            beside = [
                n
                for n in self.leaves
                if n not in certain and leaf not in ancestors[n] and by_name[n].has_rollback
            ]
            job.rollback_if_started = sorted(
                beside, key=lambda n: (by_name[n].level, order[n]), reverse=True
            )


class _Unknown:
    def __repr__(self) -> str:
        return RUN_TIME


_UNKNOWN: Any = _Unknown()


def _error(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("error: ")


def _in_start_order(specs: list[JobSpec]) -> list[JobSpec]:
    """``specs`` with each after the jobs it waits for, otherwise in plan order."""
    done: set[str] = set()
    ordered: list[JobSpec] = []
    left = list(specs)
    while left:
        ready = [s for s in left if all(d in done for d in s.after)]
        if not ready:  # a cycle: the plan model refuses these, so never here
            ready = left[:1]
        for spec in ready:
            ordered.append(spec)
            done.add(spec.name)
            left.remove(spec)
    return ordered


def preview(action: Action, raw_args: Mapping[str, Any]) -> PlanView:
    """What a run of ``action`` with ``raw_args`` would do. Raises :class:`ArgsError`."""
    resolved = action.resolve(raw_args)
    shown = resolved.shown_args()
    builder = _Builder(resolved.plan, resolved.args, secret_values(resolved.args, shown))
    builder.scope(resolved.plan.jobs, "", {}, set(), 1)
    builder.finish()
    leveled: dict[int, list[str]] = {}
    for name in builder.leaves:
        leveled.setdefault(builder.level_of(name), []).append(name)
    view = PlanView(
        action=action.name,
        args=shown,
        locks=resolved.locks,
        levels=[leveled[k] for k in sorted(leveled)],
        jobs=builder.jobs,
    )
    return view


# --------------------------------------------------------------------------------- graphs


def _edges_of_plan(view: PlanView) -> list[tuple[str, str]]:
    names = {j.name for j in view.jobs}
    return [(dep, j.name) for j in view.jobs for dep in j.after if dep in names]


def plan_graph(view: PlanView, fmt: str) -> str:
    """The plan as Mermaid or DOT: every job instance, an edge for each ``after``."""
    nodes = [
        (j.name, f"{j.name}\n{j.kind}" + ("\nhas rollback" if j.has_rollback else ""))
        for j in view.jobs
    ]
    return graph_text(view.action, nodes, _edges_of_plan(view), fmt)


def run_graph(status: RunStatus, plan: Plan | None, fmt: str, most: int = 20) -> str:
    """A run's jobs with their states and rollback states as Mermaid, DOT or JSON text.

    The items of an ``each`` over more than ``most`` are drawn as one node with counts.
    """
    import json

    shown, folded = _fold_items(status.jobs, most)
    edges = _edges_of_run([j.name for j in status.jobs], plan, folded)
    if fmt == "json":
        return json.dumps(
            {
                "run_id": status.run_id,
                "action": status.action,
                "state": status.state.value,
                "nodes": [{"name": name, "label": label} for name, label in shown],
                "edges": [{"from": a, "to": b} for a, b in edges],
            },
            indent=2,
        )
    return graph_text(f"{status.run_id} ({status.state.value})", shown, edges, fmt)


def _label(job: JobStatus) -> str:
    text = f"{job.name}\n{job.state.value}"
    if job.rollback is not None:
        text += f"\nrollback {job.rollback.state.value}"
    return text


def _fold_items(jobs: list[JobStatus], most: int) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Nodes, with the instances of a large each folded into one ``name[…]`` node per path."""
    groups: dict[str, list[JobStatus]] = {}
    for job in jobs:
        base = _item_base(job.name)
        if base is not None:
            groups.setdefault(base, []).append(job)
    big = {
        base
        for base, items in groups.items()
        if len({_instance(j.name, base) for j in items}) > most
    }
    folded: dict[str, str] = {}
    nodes: list[tuple[str, str]] = []
    counts: dict[str, dict[str, int]] = {}
    for job in jobs:
        base = _item_base(job.name)
        if base in big:
            rest = job.name[len(_instance(job.name, base)) :]
            node = f"{base}[…]{rest}"
            folded[job.name] = node
            states = counts.setdefault(node, {})
            states[job.state.value] = states.get(job.state.value, 0) + 1
            if node not in (n for n, _ in nodes):
                nodes.append((node, ""))
        else:
            nodes.append((job.name, _label(job)))
    nodes = [
        (n, label or f"{n}\n" + ", ".join(f"{c} {s}" for s, c in sorted(counts[n].items())))
        for n, label in nodes
    ]
    return nodes, folded


def _item_base(name: str) -> str | None:
    """``per-host`` for ``per-host[web1]`` and ``per-host[web1].drain``; None when no item."""
    cut = name.rfind("[")
    return name[:cut] if cut > 0 else None


def _instance(name: str, base: str) -> str:
    end = name.find("]", len(base))
    return name[: end + 1]


def _edges_of_run(
    names: list[str], plan: Plan | None, folded: dict[str, str]
) -> list[tuple[str, str]]:
    """Edges between a run's jobs: ``after`` between siblings (from the plan), an each to its
    items, a group to its first jobs."""
    present = set(names)
    specs = _spec_index(plan.jobs if plan else [], "")
    edges: list[tuple[str, str]] = []
    for name in names:
        if name.endswith("]"):
            base = _item_base(name)
            if base in present:
                edges.append((base, name))
            continue
        spec = specs.get(_generic(name))
        if spec is None:
            continue
        parent = name[: len(name) - len(spec.name) - 1] if len(name) > len(spec.name) else ""
        prefix = f"{parent}." if parent else ""
        for dep in spec.after:
            if prefix + dep in present:
                edges.append((prefix + dep, name))
        if not spec.after and parent in present:
            edges.append((parent, name))
    mapped = {(folded.get(a, a), folded.get(b, b)) for a, b in edges}
    return sorted((a, b) for a, b in mapped if a != b)


def _generic(name: str) -> str:
    """``per-host.drain`` for ``per-host[web1].drain``: the path of the job in the plan."""
    out, depth = [], 0
    for char in name:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


def _spec_index(specs: list[JobSpec], prefix: str) -> dict[str, JobSpec]:
    found: dict[str, JobSpec] = {}
    for spec in specs:
        found[prefix + spec.name] = spec
        if spec.jobs is not None:
            found.update(_spec_index(spec.jobs, f"{prefix}{spec.name}."))
    return found


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _mermaid_text(text: str) -> str:
    # In a quoted Mermaid label, #name; is an entity (so # itself is one) and a break is <br/>.
    escaped = "".join(
        {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}.get(c, c) for c in text
    )
    return escaped.replace("\n", "<br/>")


def graph_text(
    title: str, nodes: list[tuple[str, str]], edges: list[tuple[str, str]], fmt: str
) -> str:
    """Nodes ``(name, label)`` and edges ``(from, to)`` as ``dot`` or ``mermaid`` text."""
    ids = {name: f"n{i}" for i, (name, _) in enumerate(nodes)}
    if fmt == "dot":
        lines = [f"digraph {_dot_quote(title)} {{", "  rankdir=TB;", "  node [shape=box];"]
        lines += [f"  {ids[n]} [label={_dot_quote(label or n)}];" for n, label in nodes]
        lines += [f"  {ids[a]} -> {ids[b]};" for a, b in edges if a in ids and b in ids]
        return "\n".join([*lines, "}"]) + "\n"
    if fmt == "mermaid":
        lines = ["flowchart TD"]
        lines += [f'  {ids[n]}["{_mermaid_text(label or n)}"]' for n, label in nodes]
        lines += [f"  {ids[a]} --> {ids[b]}" for a, b in edges if a in ids and b in ids]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown graph format {fmt!r}")
