"""results/DIFFUSION.md: its template, results/DIFFUSION.in.md, with every number filled in from the tables of
`python -m dimerec reproduce diffusion` (results/diffusion_<dataset>.csv and .md).

The template's prose explains; it states no measured number. Each `{{block:dataset}}` in it becomes text computed
from that dataset's table, so the page says what the latest tables say, whichever way they go:

- `protocol`: the table's protocol paragraph and the command that made it (budget, seeds, rows);
- `summary`: the references, and for each hypothesis its best chain-served row on validation (both rows of a pair
  that has its own control);
- `levers`: one sentence per hypothesis, its direction ("closes", "passes", "falls") computed from the numbers;
- `verdict`: the table's verdict, as the reproduction wrote it (paired t-tests over seeds from the run files);
- `angles`: H6, where the chain's samples land, from the table's angle section;
- `budget`: the table beside the one it replaced, kept in results/before-convergence/ (trained for about one epoch):
  every variant both measured, and whether each one's gap to the control widens or narrows at convergence;
- `headline`: the best chain-served variant against the control, and which way training to convergence moved the
  gap.
- `mean`: the one-step mean against the control, at the table's budget and in H5's and H7's pairs (a pair's first
  step is its mean), and whether each narrows or widens the gap.

`python -m dimerec claims` writes it beside RESULTS.md; tests check that the committed page is this rendering of
the committed tables.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dimerec.reproduce.experiments import CONTROL, DIFFUSION_GROUPS, OURS, OWN_CONTROL, POP, SERVE_MEAN

TEMPLATE, PAGE = "DIFFUSION.in.md", "DIFFUSION.md"
EARLIER = "before-convergence"  # results/<this>/: tables kept from the step budget, beside the converged ones
BLOCK = re.compile(r"\{\{(\w+):([\w-]+)\}\}")
LEVEL = 0.5  # points: two HR@50 means closer than this are "level"


@dataclass
class DiffusionTable:
    """One dataset's diffusion table: rows by variant name (the .csv) and the sections of its .md."""
    dataset: str
    rows: pd.DataFrame
    md: str
    folder: Path | None = None  # the results folder it was read from

    @classmethod
    def read(cls, results: Path, dataset: str) -> DiffusionTable | None:
        csv = results / f"diffusion_{dataset}.csv"
        if not csv.exists():
            return None
        return cls(dataset, pd.read_csv(csv).set_index("model"), csv.with_suffix(".md").read_text(), results)

    def budget(self) -> str:
        """What every run trained for, as the protocol line says ("at most 50 epochs, ... within 240 minutes")."""
        found = re.search(r"each run trained for (.*?)(?:, scored on|, selected on)", self.md)
        return found.group(1) if found else "(budget not stated)"

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


def paired(name: str) -> bool:
    """A row of a pair judged against its own control (OWN_CONTROL): DimeRec or that control."""
    return name in OWN_CONTROL or name in OWN_CONTROL.values()


def featured(table: DiffusionTable) -> list[tuple[str, str]]:
    """(hypothesis tag, row) for the rows each hypothesis puts forward: both rows of a pair with its own control,
    else its best chain-served row on validation."""
    out = []
    for tag, names in groups(table).items():
        pairs = [n for n in names if paired(n)]
        out += [(tag, n) for n in pairs or [best_on_validation(table, names)]]
    return out


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
    for tag, name in featured(table):
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


def block_mean(table: DiffusionTable) -> str:
    """The one-step mean against its control, at the table's budget and in each pair that has its own control (H5,
    H7), on validation HR@50. The mean of one uniform start is the chain's first step (DimeRec.one_step_mean), so a
    pair's "chain first" is its mean: the gap each pair leaves says whether a longer budget or a stronger encoder
    lifts the mean towards the control."""
    def gap(mean: float, control: float) -> float:
        return control - mean

    mean, control = table.value(SERVE_MEAN.label, "valid HR@50"), table.value(CONTROL.label, "valid HR@50")
    base = gap(mean, control)
    parts = [f"On {table.dataset} (validation HR@50), the one-step mean scores {mean:.2f} against the control's "
             f"{control:.2f}, {base:.2f} points under"]
    for tag, names in groups(table).items():
        for ours in (n for n in names if n in OWN_CONTROL and table.chained(n)):
            first, own = table.value(ours, "chain first"), table.value(OWN_CONTROL[ours], "valid HR@50")
            moved = compared(gap(first, own), base, "widens", "narrows", "stays")
            closed = (f", closing {1 - gap(first, own) / base:.0%} of it"
                      if moved == "narrows" and base > LEVEL else "")
            parts.append(f"{tag}, {ours}: its mean {first:.2f} against its control's {own:.2f}, "
                         f"{gap(first, own):.2f} under (the gap {moved}{closed})")
    return "; ".join(parts) + "."


def earlier_table(table: DiffusionTable) -> DiffusionTable | None:
    """The table this one replaced, kept in results/before-convergence/ (None when none is kept)."""
    return DiffusionTable.read(table.folder / EARLIER, table.dataset) if table.folder else None


def gap_to_control(table: DiffusionTable, name: str) -> float:
    return table.value(CONTROL.label) - table.value(name)


def gap_moved(before: float, after: float) -> str:
    return f"{before:.2f} → {after:.2f} points ({compared(after, before, 'widens', 'narrows', 'stays')})"


def block_budget(table: DiffusionTable) -> str:
    """The converged table beside the earlier one kept in results/before-convergence/: each variant both tables hold
    (the references, then each hypothesis's best chain on the converged validation), its test HR@50 in each and its
    gap to the control in each, and which way the gaps moved."""
    earlier = earlier_table(table)
    if earlier is None:
        return f"(no earlier table kept: results/{EARLIER}/diffusion_{table.dataset}.csv is absent)"
    names = [spec.label for spec in DIFFUSION_GROUPS["References"] if table.has(spec.label)]
    names += [name for _, name in featured(table) if not paired(name)]
    names = [n for n in dict.fromkeys(names) if earlier.has(n)]
    lines = [f"Test HR@50, mean ± std over seeds; the gap is the control's HR@50 minus the variant's. Before: "
             f"`results/{EARLIER}/diffusion_{table.dataset}.md`, each run trained for {earlier.budget()}; at "
             f"convergence: the table above, each run trained for {table.budget()}.", "",
             "| variant | test HR@50 before | at convergence | gap to the control before | at convergence |",
             "|---|---|---|---|---|"]
    for name in names:
        gaps = ["—" if name == CONTROL.label else f"{gap_to_control(t, name):.2f}" for t in (earlier, table)]
        lines.append(f"| {name} | {earlier.test(name)} | {table.test(name)} | {gaps[0]} | {gaps[1]} |")
    trained = [n for n in names if n != POP.label]  # the floor is counted, not trained
    rises = [n for n in trained if compared(table.value(n), earlier.value(n), "up", "down", "level") == "up"]
    moves = [f"{n}, {gap_moved(gap_to_control(earlier, n), gap_to_control(table, n))}"
             for n in trained if n != CONTROL.label]
    lines += ["", f"At convergence {len(rises)} of the {len(trained)} trained variants score higher on test than "
                  f"before. The gap to the control of each DimeRec variant: " + "; ".join(moves) + "."]
    left = [tag for tag in groups(earlier) if tag not in groups(table)]
    if left:
        lines += ["", f"Only the earlier table holds {', '.join(left)}: not run at convergence."]
    return "\n".join(lines)


def block_headline(table: DiffusionTable) -> str:
    """One sentence for the top of the page: the best chain-served variant against the control, and, where the
    earlier table is kept, whether training to convergence narrowed or widened the gap."""
    best = best_on_validation(table, [n for names in groups(table).values() for n in names])
    gap = gap_to_control(table, best)
    text = (f"On {table.dataset}, the best chain-served variant on validation ({best}) scores {table.value(best):.2f} "
            f"test HR@50, {gap:.2f} points {'below' if gap > 0 else 'above'} the no-diffusion control "
            f"({table.value(CONTROL.label):.2f})")
    earlier = earlier_table(table)
    if earlier is None or not earlier.has(best):
        return text + "."
    chain_before, chain_after = gap_to_control(earlier, OURS.label), gap_to_control(table, OURS.label)
    return (text + f". Trained to its validation plateau instead of for {earlier.budget()}, the gap to the "
            f"control of {best} goes "
            f"{gap_moved(gap_to_control(earlier, best), gap)} and that of the default chain "
            f"{gap_moved(chain_before, chain_after)} (\"At convergence\" below).")


BLOCKS = {"protocol": block_protocol, "summary": block_summary, "levers": block_levers,
          "verdict": block_verdict, "angles": block_angles, "budget": block_budget,
          "headline": block_headline, "mean": block_mean}


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
