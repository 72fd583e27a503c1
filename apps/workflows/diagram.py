"""A definition drawn as Mermaid (`stateDiagram-v2`) and Graphviz DOT, optionally marking a current state.

`*` sources are drawn as one edge from each non-final state. State names are restricted to
letters, digits and `_` by the spec, so they are safe as Mermaid ids (and quoted in DOT).
"""

from __future__ import annotations

from apps.workflows.spec import WorkflowSpec


def _edges(spec: WorkflowSpec) -> list[tuple[str, str, str]]:
    edges = []
    for state in spec.state_names:
        for t in spec.transitions_from(state):
            edges.append((state, t.target, t.name))
    return edges


def _one_line(text: str) -> str:
    return " ".join(text.replace(":", " ").split())[:80]


def mermaid(spec: WorkflowSpec, *, current: str | None = None) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {spec.initial}"]
    for state in spec.states:
        if state.description:
            lines.append(f"    {state.name}: {state.name} - {_one_line(state.description)}")
    for source, target, name in _edges(spec):
        lines.append(f"    {source} --> {target}: {name}")
    for final in spec.finals:
        lines.append(f"    {final} --> [*]")
    if current:
        lines.append("    classDef current fill:#ffd966,stroke:#b45f06,stroke-width:3px")
        lines.append(f"    class {current} current")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(spec: WorkflowSpec, *, current: str | None = None) -> str:
    lines = [
        f"digraph {_quote(spec.key)} {{",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    "__start__" [shape=point, width=0.15];',
    ]
    for state in spec.states:
        attributes = []
        if state.name in spec.finals:
            attributes.append("peripheries=2")
        if state.name == current:
            attributes += ['style="rounded,filled"', 'fillcolor="#ffd966"', "penwidth=2"]
        if attributes:
            lines.append(f"    {_quote(state.name)} [{', '.join(attributes)}];")
        else:
            lines.append(f"    {_quote(state.name)};")
    lines.append(f'    "__start__" -> {_quote(spec.initial)};')
    for source, target, name in _edges(spec):
        lines.append(f"    {_quote(source)} -> {_quote(target)} [label={_quote(name)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
