"""Bookkeeping of experiments/gpu/phase3.sh: pick the best variant, merge the results.

    python experiments/gpu/phase3_results.py pick TAU.json        # prints the variant name
    python experiments/gpu/phase3_results.py summary OUT.json RUNS_DIR TAU_SHORT TAU_BEST

A variant is named by the directory above its draft (``RUNS_DIR/<variant>/checkpoint``).
``pick``: the highest tree tau, then the highest seq tau. ``summary``: per variant the
teacher-forced evals and seconds per step (``metrics.json``) and the taus, plus the same
for the continued best run; prints a markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def taus(path: Path) -> dict[str, dict[str, float]]:
    """variant -> {"tree": tau, "seq": tau} from a tau_by_text JSON (missing file: {})."""
    if not path.is_file():
        return {}
    out: dict[str, dict[str, float]] = {}
    for r in json.loads(path.read_text())["results"]:
        name = Path(r["draft"]).parent.name
        for row in r.get("rows", []):
            out.setdefault(name, {})[row["method"].split()[0]] = row["tau"]
    return out


def pick(path: Path) -> str:
    found = taus(path)
    if not found:
        raise SystemExit(f"no tau results in {path}")
    return max(found, key=lambda n: (found[n].get("tree", 0.0), found[n].get("seq", 0.0)))


def run_metrics(run_dir: Path) -> dict:
    """The latest metrics.json of a run: exported draft, else its checkpoint."""
    for sub in ("final", "checkpoint"):
        path = run_dir / sub / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            last = m["evals"][-1] if m.get("evals") else {}
            return {
                "source": sub,
                "step": m.get("step"),
                "seconds_per_step": m.get("seconds_per_step"),
                "data": m.get("data"),
                "last_eval": last,
                "final": m.get("final"),
            }
    return {}


def summary(out: Path, runs: Path, short: Path, best: Path) -> str:
    short_taus, best_taus = taus(short), taus(best)
    rows = {}
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
        name = run_dir.name
        rows[name] = run_metrics(run_dir) | {
            "tau_short": short_taus.get(name),
            "tau_best": best_taus.get(name),
        }
    out.write_text(json.dumps(rows, indent=2, default=str))
    lines = [
        "| variant | step | s/step | eval agree | eval ce | tree tau | seq tau |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ev = r.get("last_eval", {})
        tau = r.get("tau_best") or r.get("tau_short") or {}
        lines.append(
            f"| {name} | {r.get('step')} | {r.get('seconds_per_step') or 0:.3f} | "
            f"{ev.get('eval/agree', 0):.4f} | {ev.get('eval/ce', 0):.4f} | "
            f"{tau.get('tree', 0):.2f} | {tau.get('seq', 0):.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "pick":
        print(pick(Path(sys.argv[2])))
    else:
        print(summary(*(Path(a) for a in sys.argv[2:6])))
