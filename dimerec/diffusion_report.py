"""results/DIFFUSION.md: its template, results/DIFFUSION.in.md, with every number filled in from the tables of
`python -m dimerec reproduce diffusion` (results/diffusion_<dataset>.csv and .md).

The template's prose explains; it states no measured number. Each `{{block:dataset}}` in it becomes text computed
from that dataset's table, so the page says what the latest tables say, whichever way they go:

- `protocol`: the table's protocol paragraph and the command that made it (budget, seeds, rows);
- `summary`: the references, and for each hypothesis its best chain-served row on validation (both rows of a pair
  that has its own control);
- `levers`: one sentence per hypothesis, its direction ("closes", "passes", "falls") computed from the numbers;
- `verdict`: the table's verdict, as the reproduction wrote it (paired t-tests over seeds from the run files);
- `angles`: H6, where the chain's samples land, from the table's angle section.

`python -m dimerec claims` writes it beside RESULTS.md; tests check that the committed page is this rendering of
the committed tables.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dimerec.reproduce.experiments import CONTROL, DIFFUSION_GROUPS, OURS, OWN_CONTROL, SERVE_MEAN

TEMPLATE, PAGE = "DIFFUSION.in.md", "DIFFUSION.md"
BLOCK = re.compile(r"\{\{(\w+):([\w-]+)\}\}")
LEVEL = 0.5  # points: two HR@50 means closer than this are "level"


@dataclass
class DiffusionTable:
    """One dataset's diffusion table: rows by variant name (the .csv) and the sections of its .md."""
    dataset: str
    rows: pd.DataFrame
    md: str

    @classmethod
    def read(cls, results: Path, dataset: str) -> DiffusionTable | None:
        csv = results / f"diffusion_{dataset}.csv"
        if not csv.exists():
            return None
        return cls(dataset, pd.read_csv(csv).set_index("model"), csv.with_suffix(".md").read_text())

    def has(self, name: str) -> bool:
        return name in self.rows.index

    def value(self, name: str, column: str = "HR@50") -> float:
        return float(self.rows.loc[name, column])

    def test(self, name: str) -> str:
        """Test HR@50 as mean ± std over seeds."""
        return f"{self.value(name):.2f} ± {self.value(name, 'HR@50 std'):.2f}"

    def chained(self, name: str) -> bool:  # served by a reverse chain (a per-step curve was recorded)
        return not pd.isna(self.rows.loc[name, "chain first"])

    def chain(self, name: str) -> str:
        first, last = self.value(name, "chain first"), self.value(name, "chain last")
        return f"{first:.2f} → {last:.2f}"

    def section(self, title_start: str) -> str:
        """The body of the .md's section whose heading starts with `title_start` ('' when absent)."""
        found = re.search(rf"^## {re.escape(title_start)}[^\n]*\n(.*?)(?=^## |\Z)", self.md, re.S | re.M)
        return found.group(1).strip() if found else ""


def groups(table: DiffusionTable) -> dict[str, list[str]]:
    """Hypothesis tag (H1, H2, ..., "H1 + H2, H1 + H3") -> its rows present in the table."""
    out = {}
    for title, specs in DIFFUSION_GROUPS.items():
        if title == "References":
            continue
        names = [s.label for s in specs if table.has(s.label)]
        if names:
            out[title.split(":")[0]] = names
    return out


def best_on_validation(table: DiffusionTable, names: list[str]) -> str:
    chained = [n for n in names if table.chained(n)]
    return max(chained, key=lambda n: table.value(n, "valid HR@50"))


def compared(a: float, b: float, above: str, below: str, level: str) -> str:
    return level if abs(a - b) < LEVEL else (above if a > b else below)


def falls_or_rises(table: DiffusionTable, name: str) -> str:
    first, last = table.value(name, "chain first"), table.value(name, "chain last")
    return (f"its chain {compared(last, first, 'rises', 'falls', 'stays level')} from {first:.2f} after the first "
            f"step to {last:.2f} after the last (valid)")


def block_protocol(table: DiffusionTable) -> str:
    paragraphs = [p for p in table.md.split("\n\n") if p.startswith(("Test split", "Training:", "Command:"))]
    return "\n\n".join(paragraphs)


def block_summary(table: DiffusionTable) -> str:
    lines = ["| | variant | valid HR@50 | test HR@50 | chain: x̂0 after step 1 → after the last (valid) |",
             "|---|---|---|---|---|"]
    best = best_on_validation(table, [n for names in groups(table).values() for n in names])

    def row(tag: str, name: str) -> None:
        shown = f"**{name}**" if name in (best, CONTROL.label) else name
        chain = table.chain(name) if table.chained(name) else "—"
        lines.append(f"| {tag} | {shown} | {table.value(name, 'valid HR@50'):.2f} | {table.test(name)} | {chain} |")

    for spec in DIFFUSION_GROUPS["References"]:
        if table.has(spec.label):
            row("", spec.label)
    for tag, names in groups(table).items():
        pairs = [n for n in names if n in OWN_CONTROL or n in OWN_CONTROL.values()]
        for name in pairs or [best_on_validation(table, names)]:
            row(tag, name)
    lines.append("")
    lines.append(f"Bold: the control and the best chain-served variant on validation ({best}). A hypothesis with "
                 f"several rows shows the one that validates best; every row is in `results/diffusion_"
                 f"{table.dataset}.md`.")
    return "\n".join(lines)


def lever_sentence(table: DiffusionTable, tag: str, names: list[str]) -> str:
    chain, mean = table.value(OURS.label), table.value(SERVE_MEAN.label)
    pair = [n for n in names if n in OWN_CONTROL]
    if pair:  # DimeRec and its own control under the changed setting: does the gap to the control move?
        ours, own = pair[0], OWN_CONTROL[pair[0]]
        gap, default_gap = table.value(own) - table.value(ours), table.value(CONTROL.label) - chain
        moved = compared(gap, default_gap, "widens", "narrows", "stays")
        return (f"- **{tag}**: {ours} {table.test(ours)} against {own} {table.test(own)}: the gap to the control "
                f"{moved}, {default_gap:.2f} → {gap:.2f} points; {falls_or_rises(table, ours)}.")
    best = best_on_validation(table, names)
    value = table.value(best)
    to_mean = compared(value, mean, "above the one-step mean", "below the one-step mean",
                       "level with the one-step mean")
    share = (value - chain) / (mean - chain) if mean - chain > LEVEL else float("nan")
    closes = ("" if pd.isna(share) or share <= 0 or share >= 1
              else f", closing {share:.0%} of the distance from the chain to the mean")
    return (f"- **{tag}**, best on validation **{best}**: test HR@50 {table.test(best)}, "
            f"{value - chain:+.2f} points from the default chain ({chain:.2f}){closes}; "
            f"{to_mean} ({mean:.2f}); {falls_or_rises(table, best)}.")


def block_levers(table: DiffusionTable) -> str:
    return "\n".join(lever_sentence(table, tag, names) for tag, names in groups(table).items())


def block_verdict(table: DiffusionTable) -> str:
    return table.section("Verdict")


def block_angles(table: DiffusionTable) -> str:
    section = table.section("H6")
    rows = [line.strip("|").split("|") for line in section.splitlines() if re.match(r"^\| (\d+|x_0) \|", line)]
    if not rows:
        return "(not measured: rerun the command above)"
    (each0, mean0, apart0), (each1, mean1, apart1) = ([float(v) for v in r[2:5]] for r in (rows[0], rows[-1]))
    nearer = ("nearer the true item than one sample" if mean1 < each1 - LEVEL else
              "no nearer the true item than one sample")
    return (f"Two samples of one user lie {apart0:.1f}° apart after the first reverse step and {apart1:.1f}° "
            f"apart at x_0; each sample's angle to the true item goes from {each0:.1f}° to {each1:.1f}°, the "
            f"samples' mean's from {mean0:.1f}° to {mean1:.1f}°: at x_0 the mean is {nearer} "
            f"(`results/diffusion_{table.dataset}.md`, H6; a random direction lies about 90° away).")


BLOCKS = {"protocol": block_protocol, "summary": block_summary, "levers": block_levers,
          "verdict": block_verdict, "angles": block_angles}


def render(template: str, results: Path) -> str:
    """The template with each {{block:dataset}} filled in from results/diffusion_<dataset>.*."""
    tables: dict[str, DiffusionTable | None] = {}

    def fill(found: re.Match) -> str:
        block, dataset = found.groups()
        if block not in BLOCKS:
            raise ValueError(f"{TEMPLATE}: unknown block {{{{{block}:{dataset}}}}}; known: {', '.join(BLOCKS)}")
        if dataset not in tables:
            tables[dataset] = DiffusionTable.read(results, dataset)
        table = tables[dataset]
        if table is None:
            return (f"(not run yet: `python -m dimerec reproduce diffusion --dataset {dataset}` writes "
                    f"results/diffusion_{dataset}.md)")
        return BLOCKS[block](table)

    return BLOCK.sub(fill, template)


def write_diffusion_page(results: Path = Path("results")) -> Path | None:
    """results/DIFFUSION.md from results/DIFFUSION.in.md (None when the folder has no template)."""
    template = results / TEMPLATE
    if not template.exists():
        return None
    out = results / PAGE
    out.write_text(render(template.read_text(), results))
    return out
