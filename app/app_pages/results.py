"""Paper vs ours: the tables and figures that `python -m dimerec reproduce` wrote to results/. Reads files only."""
import os
import re
from pathlib import Path

import streamlit as st

from app import ui
from dimerec.reproduce import DESCRIPTIONS

ROOT = Path(__file__).resolve().parents[2]
DATASET_ORDER = ("ml-1m", "yoochoose", "kuairec", "planted")  # the paper's datasets first
FIRST_COMMAND = "python -m dimerec reproduce dimerec --dataset planted --quick"


def results_dir() -> Path:
    return Path(os.environ.get("DIMEREC_RESULTS") or ROOT / "results")


@st.cache_data(show_spinner=False, max_entries=64)
def _read(path: str, mtime_ns: int) -> bytes:  # mtime_ns: part of the cache key, so a rewritten file is reread
    return Path(path).read_bytes()


def read_bytes(path: Path) -> bytes:
    return _read(str(path), path.stat().st_mtime_ns)


def read_text(path: Path) -> str:
    return read_bytes(path).decode("utf-8", errors="replace")


def find_experiments(folder: Path) -> dict[str, dict[str, Path]]:
    """Experiment -> dataset -> the `NAME_DATASET.md` stem, in DESCRIPTIONS' order, then any other name."""
    found: dict[str, dict[str, Path]] = {}
    for md in sorted(folder.glob("*.md")) if folder.is_dir() else []:
        match = re.fullmatch(r"([A-Za-z0-9-]+)_([A-Za-z0-9.-]+)", md.stem)  # not RESULTS.md, not *_tuning
        if match:
            found.setdefault(match[1], {})[match[2]] = md.with_suffix("")
    order = {name: i for i, name in enumerate(DESCRIPTIONS)}
    rank = {d: i for i, d in enumerate(DATASET_ORDER)}
    return {name: dict(sorted(found[name].items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
            for name in sorted(found, key=lambda n: (order.get(n, len(order)), n))}


def demote_headings(text: str, by: int = 2) -> str:
    """The files' `#` headings two levels down, so they sit under the page's title (code blocks untouched)."""
    lines, fenced = [], False
    for line in text.splitlines():
        fenced ^= line.lstrip().startswith("```")
        heading = re.match(r"(#{1,6}) ", line)
        lines.append("#" * min(6, len(heading[1]) + by) + line[len(heading[1]):] if heading and not fenced else line)
    return "\n".join(lines)


def pick(widget, label: str, options: list[str], key: str, wanted: str | None, from_link: bool, **kwargs) -> str:
    """A selector that starts at `wanted` (from the link or the last choice) when it holds no valid value yet."""
    if st.session_state.get(key) not in options:
        if from_link and wanted is not None and wanted not in options:
            st.error(f"{label} {wanted!r} from the link has no results in this folder (found: {', '.join(options)}); "
                     f"showing {options[0]!r} instead.")
        st.session_state[key] = wanted if wanted in options else options[0]
    return widget(label, options, key=key, **kwargs)


st.markdown(ui.PAGE_CSS, unsafe_allow_html=True)
ui.projector()
st.title("Paper vs ours")
st.caption("Each table below was written by `python -m dimerec reproduce NAME --dataset D`: every model of the "
           "experiment is trained over several seeds under the same budget, its checkpoint picked on validation "
           "HR@50 and tested once, and the table gives the test metrics in % as mean ± std over seeds (with a paired "
           "t-test of DimeRec against the best baseline where there are baselines). RESULTS.md, when present, sets "
           "the paper's reported numbers beside ours.")
folder = results_dir()
summary = folder / "RESULTS.md"
if summary.is_file():
    # collapsed: open, RESULTS.md makes the page ~5,000 px tall; its tables break lines in cells with <br>
    with st.expander("Paper claims vs our measurements (RESULTS.md)"):
        st.markdown(demote_headings(read_text(summary)), unsafe_allow_html=True)  # our own file, not user input

experiments = find_experiments(folder)
if not experiments:
    st.info(f"No results in {folder} yet. Each experiment writes its table there (NAME_DATASET.md and .csv, a figure "
            f"as .png and .html); the quickest one takes well under a minute on the synthetic `planted` data:")
    st.code(FIRST_COMMAND, language="bash")
    st.caption("Experiments: " + ", ".join(DESCRIPTIONS) + ". Add `--dataset ml-1m --data-dir …` for real data.")
    st.stop()

fresh = "results_experiment" not in st.session_state  # only a fresh page reads the link
left, right = st.columns([2, 1])
with left:
    name = pick(st.selectbox, "Experiment", list(experiments), "results_experiment",
                st.query_params.get("experiment") if fresh else None, fresh,
                format_func=lambda n: f"{n}: {DESCRIPTIONS[n]}" if n in DESCRIPTIONS else n,
                help="One per table or figure of the paper; only those with results in this folder are listed.")
with right:  # one radio per experiment (their datasets differ); a new one starts at the last dataset shown
    dataset = pick(st.radio, "Dataset", list(experiments[name]), f"results_dataset_{name}",
                   st.query_params.get("dataset") if fresh else st.session_state.get("_results_dataset"), fresh,
                   horizontal=True)
st.session_state["_results_dataset"] = dataset
st.query_params["experiment"], st.query_params["dataset"] = name, dataset
stem = experiments[name][dataset]

st.subheader(f"{name} on {dataset}")
if name in DESCRIPTIONS:
    st.caption(DESCRIPTIONS[name])
body = read_text(stem.with_suffix(".md"))
if body.startswith("# "):  # the title line: already the subheader above
    body = body.split("\n", 1)[1] if "\n" in body else ""
st.markdown(demote_headings(body))

png, html, csv = (stem.with_suffix(s) for s in (".png", ".html", ".csv"))
if png.is_file():
    st.image(read_bytes(png), caption=f"{png.name}: the same figure as the interactive {html.name}")
elif html.is_file():
    st.caption(f"No {png.name} (PNG export needs Chromium); the figure is in {html.name}, below.")
buttons = st.columns(4)
if csv.is_file():
    buttons[0].download_button(f"⬇ {csv.name}", read_bytes(csv), file_name=csv.name, mime="text/csv",
                               key="results_csv", help="The table's numbers, one row per model.")
if html.is_file():
    buttons[1].download_button(f"⬇ {html.name}", read_bytes(html), file_name=html.name, mime="text/html",
                               key="results_html",
                               help="The interactive figure; open it in a browser (it loads plotly.js online).")
