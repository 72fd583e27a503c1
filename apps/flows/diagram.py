"""A flow drawn as Mermaid (`flowchart TD`), optionally with each step's count of runs.

Step ids are letters, digits, `_`, `-` and `.` (expanded fallbacks), so they are mapped to
`s0`, `s1`, … as Mermaid node ids and shown as quoted labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _label(step: dict[str, Any]) -> str:
    kind = step["type"]
    if kind == "send":
        text = f"send {', '.join(step['channels'])}"
    elif kind == "delay":
        text = f"wait {step['duration']}s" if step.get("duration") else f"wait until {step.get('until')} local"
    elif kind == "digest":
        text = f"digest {step['window_minutes']} min"
    elif kind == "branch":
        condition = step.get("if") or {}
        if "cel" in condition:
            text = f"if {condition['cel']}"
        else:
            text = f"if {condition.get('channel')} is {' or '.join(condition.get('state', []))}"
        if step.get("wait"):
            text += f" within {step['wait']}s"
    else:
        text = "exit"
    return f"{step['id']}: {text}".replace('"', "'")


def mermaid(steps: list[dict[str, Any]], *, counts: Mapping[str, int] | None = None) -> str:
    node = {s["id"]: f"s{i}" for i, s in enumerate(steps)}
    lines = ["flowchart TD", "    start((start))"]
    for step in steps:
        label = _label(step)
        if counts and counts.get(step["id"]):
            label += f" [{counts[step['id']]} here]"
        shape = (
            ('{"', '"}') if step["type"] == "branch" else (('(["', '"])') if step["type"] == "exit" else ('["', '"]'))
        )
        lines.append(f"    {node[step['id']]}{shape[0]}{label}{shape[1]}")
    lines.append("    done((end))")
    lines.append(f"    start --> {node[steps[0]['id']]}")
    for step in steps:
        source = node[step["id"]]
        if step["type"] == "branch":
            lines.append(f"    {source} -->|yes| {node.get(step['then'], 'done') if step['then'] else 'done'}")
            lines.append(f"    {source} -->|no| {node.get(step['else'], 'done') if step['else'] else 'done'}")
        elif step["type"] == "exit":
            lines.append(f"    {source} --> done")
        else:
            lines.append(f"    {source} --> {node[step['next']] if step.get('next') else 'done'}")
    return "\n".join(lines) + "\n"
