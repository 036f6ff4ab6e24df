"""Figure of the at-scale benchmark: where a tree round's time goes, per context.

``python -m longspec.bench.scale_plot RESULT.json [OUT.png]`` redraws it from a saved
result (default: RESULT with ``.png``); ``longspec.bench.scale`` draws it after each run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from longspec.bench.scale_report import measured_rows
from longspec.plotting import pyplot, save

MS = 1e3
# Phases of an unfused round, bottom to top: (label, how to read seconds from a row).
PHASES = (
    ("draft levels", lambda r: r["draft_s"]),
    ("tree attention (target)", lambda r: r["verify_attention_s"]),
    ("MLP, projections, norms (target)", lambda r: max(r["verify_other_s"], 0.0)),
    ("accept + commit", lambda r: r["accept_commit_s"]),
)


def plot_breakdown(result: dict, path: Path) -> Path | None:
    """Per context: the vanilla step, the phases of a tree round stacked, and the round as
    the decode loop runs it (one CUDA graph). None when no context was measured."""
    rows = measured_rows(result.get("rows", []))
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3 + 2.2 * len(rows), 4.5))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["vanilla_step_s"] * MS for r in rows], 0.35,
           color="0.6", label="vanilla step")  # fmt: skip
    bottom = [0.0] * len(rows)
    for label, seconds in PHASES:
        heights = [seconds(r) * MS for r in rows]
        ax.bar([x + 0.2 for x in xs], heights, 0.35, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    fused = [r["tree_round_s"] * MS for r in rows]
    ax.scatter([x + 0.2 for x in xs], fused, marker="_", s=900, color="black", zorder=3,
               label="round as the loop runs it (one graph)")  # fmt: skip
    ax.set_xticks(list(xs), [_tokens(r["context"]) for r in rows])
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("ms")
    ax.set_title(_title(result, rows), fontsize="small")
    ax.legend(fontsize="x-small", loc="upper left", markerscale=0.4)
    return save(fig, plt, path)


def _tokens(context: int) -> str:
    return f"{context // 1024}k" if context >= 1024 else str(context)


def _title(result: dict, rows: list[dict]) -> str:
    card = result.get("environment", {}).get("device_name", "")
    nodes = rows[0].get("tree_nodes", "")
    return f"{result.get('shape', '')} on {card}: one tree round ({nodes} tokens verified)"


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: python -m longspec.bench.scale_plot RESULT.json [OUT.png]", file=sys.stderr)
        return 2
    src = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else src.with_suffix(".png")
    try:
        result = json.loads(src.read_text())
    except (OSError, ValueError) as err:
        print(f"scale_plot: cannot read {src}: {err}", file=sys.stderr)
        return 1
    try:
        written = plot_breakdown(result, out)
    except (AttributeError, KeyError, TypeError) as err:
        print(f"scale_plot: {src} is not a scale benchmark result ({err!r})", file=sys.stderr)
        return 1
    if written is None:
        print(f"scale_plot: no measured context in {src}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
