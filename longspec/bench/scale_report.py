"""Markdown tables and projected speedups of the at-scale benchmark."""

from __future__ import annotations

MS = 1e3
MB = 2**20


def floor_seconds(row: dict, weights_read_bytes: int, bandwidth_gb_s: float) -> float:
    """Memory floor of one decode step: every weight and the KV up to the context read once."""
    return (weights_read_bytes + row["target_kv_bytes"]) / (bandwidth_gb_s * 1e9)


def add_derived(row: dict, weights_read_bytes: int, bandwidth_gb_s: float, taus: dict) -> None:
    """Ratios and projected speedups (tau x vanilla step / tree round), into the row."""
    step = row["vanilla_step_s"]
    row["floor_s"] = floor_seconds(row, weights_read_bytes, bandwidth_gb_s)
    row["step_over_floor"] = step / row["floor_s"]
    row["round_over_step"] = row["tree_round_s"] / step
    row["verify_over_step"] = row["verify_s"] / step
    row["projected_speedup"] = {
        name: tau * step / row["tree_round_s"] for name, tau in taus.items()
    }


def main_table(rows: list[dict], taus: dict) -> str:
    """(a) step vs floor, (b) round vs step, (c) verification vs step, projections."""
    proj = [f"projected x (tau {tau:g}, {name})" for name, tau in taus.items()]
    head = ["context", "vanilla step ms", "floor ms", "step/floor", "tree round ms"]
    head += ["round/step", "verify ms", "verify/step", *proj]
    lines = _header(head)
    for r in measured_rows(rows):
        cells = [r["context"], _ms(r["vanilla_step_s"]), _ms(r["floor_s"])]
        cells += [f"{r['step_over_floor']:.2f}", _ms(r["tree_round_s"])]
        cells += [f"{r['round_over_step']:.2f}", _ms(r["verify_s"])]
        cells += [f"{r['verify_over_step']:.2f}"]
        cells += [f"{r['projected_speedup'][name]:.2f}x" for name in taus]
        lines.append(_line(cells))
    return "\n".join(lines)


def breakdown_table(rows: list[dict]) -> str:
    """Phases of an unfused tree round next to the fused round."""
    head = ["context", "draft levels ms", "verify ms", "attention ms (est.)"]
    head += [
        "MLP + projections ms",
        "accept + commit ms",
        "sum ms",
        "round ms (as the loop runs it)",
    ]
    lines = _header(head)
    for r in measured_rows(rows):
        total = r["draft_s"] + r["verify_s"] + r["accept_commit_s"]
        cells = [r["context"], _ms(r["draft_s"]), _ms(r["verify_s"])]
        cells += [_ms(r["verify_attention_s"]), _ms(r["verify_other_s"])]
        cells += [_ms(r["accept_commit_s"]), _ms(total), _ms(r["tree_round_s"])]
        lines.append(_line(cells))
    return "\n".join(lines)


def attention_memory_table(rows: list[dict], plain: str) -> str:
    """(d) one layer's tree attention per backend (ratio to ``plain``) and (e) memory."""
    measured = measured_rows(rows)
    names = list(measured[0]["attention_layer_s"]) if measured else []
    others = [n for n in names if n != plain] if plain in names else []
    head = ["context", *(f"{n} ms (1 layer)" for n in names)]
    head += [f"{plain} / {n}" for n in others]
    head += ["draft cache MB", "target KV MB"]
    lines = _header(head)
    for r in measured:
        att = r["attention_layer_s"]
        cells = [r["context"], *(_ms(att[n]) for n in names)]
        cells += [f"{att[plain] / att[n]:.2f}" for n in others]
        cells += [f"{r['draft_cache_bytes'] / MB:.2f}", f"{r['target_kv_bytes'] / MB:.0f}"]
        lines.append(_line(cells))
    return "\n".join(lines)


def skipped_lines(rows: list[dict]) -> list[str]:
    return [f"context {r['context']} skipped: {r['skipped']}" for r in rows if "skipped" in r]


def measured_rows(rows: list[dict]) -> list[dict]:
    """The rows of contexts that were measured (not skipped)."""
    return [r for r in rows if "skipped" not in r]


def _ms(seconds: float) -> str:
    return f"{seconds * MS:.3f}"


def _header(names: list[str]) -> list[str]:
    return [_line(names), _line(["---"] * len(names))]


def _line(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
