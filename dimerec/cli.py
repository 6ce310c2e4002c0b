"""Command line: python -m dimerec {datasets,download,train,evaluate,reproduce,claims} ...
(benchmarks live in benchmarks/, outside the package)

User mistakes (a missing file, a bad flag value, a diverged run) print one line
starting with "error:" and exit with status 2 (1 for a diverged run); no traceback.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dimerec.errors import DimeRecError, TrainingDiverged
from dimerec.options import OneLineParser, add_dataclass_args, add_train_arguments, check_positive


def cmd_datasets(args) -> None:
    import pandas as pd

    from dimerec.data import check_data_dir, find_datasets, load_dataset, resolve_data_dir

    data_dir = check_data_dir(resolve_data_dir(args.data_dir))
    rows = []
    for name in find_datasets(data_dir):
        try:
            rows.append(load_dataset(name, data_dir).stats())
        except DimeRecError as err:
            print(f"warning: {err}", file=sys.stderr)
    table = pd.DataFrame(rows).rename(columns={"users": "users/sequences", "avg_length": "avg length"})
    print(f"data directory: {data_dir}")
    print(table.to_string(index=False, formatters={"avg length": "{:.1f}".format}))


def cmd_download(args) -> None:
    from dimerec.data import resolve_data_dir
    from dimerec.data.movielens import download

    folder = download(args.which, resolve_data_dir(args.data_dir))
    print(f"{args.which} is in {folder}")


def print_metrics(metrics: dict) -> None:
    import pandas as pd

    table = pd.DataFrame({split: metrics[split] for split in ("valid", "test") if metrics.get(split)}).T
    rates = [c for c in table.columns if not c.startswith("AveragePopularity")]  # a count, not a share
    table[rates] *= 100
    print(f"{metrics['model']} on {metrics['dataset']}, protocol {metrics['protocol']}, seed {metrics['seed']} "
          f"(values in %; AveragePopularity in training interactions)")
    print(table.round(2).to_string())


def cmd_train(args, model_cls, argv: list[str]) -> None:
    from dimerec.distributed import rank
    from dimerec.options import train_from_args

    metrics, out = train_from_args(args, model_cls, argv)
    if rank() == 0:  # under torchrun, rank 0 alone reports
        print_metrics(metrics)
        print(f"run directory: {out}")


def cmd_evaluate(args) -> None:
    from dataclasses import asdict

    from dimerec.runs import load_run, read_metrics, write_json_atomic
    from dimerec.serving import SERVING_FIELDS, serving_of
    from dimerec.trainer import final_metrics

    run = Path(args.run_dir)
    model, data, config = load_run(run, args.data_dir)
    reseeded = args.seed is not None and args.seed != config["train_config"]["seed"]
    # the seed of the scoring alone (the chains' random starts, a subsample's rows); the run keeps its own
    train_cfg = {**config["train_config"], "seed": args.seed} if reseeded else config["train_config"]
    seed_tag = f"-seed-{args.seed}" if reseeded else ""  # another seed's file names it
    changes = {k: getattr(args, k) for k in SERVING_FIELDS if k in args}
    serve = serving_of(model, {**config["serving"], **changes})
    if args.sampled_negatives is not None:
        return evaluate_sampled(run, model, data, train_cfg, args.sampled_negatives, serve, seed_tag)
    protocol = args.protocol or train_cfg["protocol"]
    mask_seen = train_cfg["mask_seen"] if args.mask_seen is None else args.mask_seen
    valid, test = final_metrics(model, data, train_cfg, serve, protocol=protocol, mask_seen=mask_seen,
                                retriever=args.retriever, retriever_params=args.retriever_params)
    metrics = {"model": config["model"], "dataset": config["dataset"], "protocol": protocol,
               "seed": train_cfg["seed"], "mask_seen": mask_seen, "serving": asdict(serve), "valid": valid,
               "test": test}
    previous = read_metrics(run, required=False) or {}
    for key in ("epochs", "steps", "sampling", "epochs_trained", "stopped_by", "train_minutes"):  # its training
        if key in previous:
            metrics[key] = previous[key]
    retriever = args.retriever or train_cfg["retriever"]
    metrics["retriever"] = retriever
    print_metrics(metrics)
    # the training run's own record, metrics.json, is left alone: a re-evaluation gets a file of its options
    served_as = "".join(f"-{k.replace('_', '-')}-{v}" for k, v in changes.items()) + seed_tag  # changes, by name
    path = run / f"metrics-eval-{protocol}-{'masked' if mask_seen else 'unmasked'}-{retriever}{served_as}.json"
    write_json_atomic(metrics, path)
    print(f"written to {path}")


def evaluate_sampled(run: Path, model, data, train_cfg: dict, n_negatives: int, serve, seed_tag: str) -> None:
    from dimerec.runs import write_json_atomic
    from dimerec.trainer import sampled_test

    if n_negatives < 1:
        raise DimeRecError(f"--sampled-negatives must be at least 1, got {n_negatives}")
    try:
        metrics = sampled_test(model, data, train_cfg, serve, n_negatives, strict=True)
    except DimeRecError as refusal:
        raise DimeRecError(f"{run}: {refusal}") from None
    print(f"test, last item of each user vs {n_negatives} sampled unseen items: "
          + "  ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if not k.startswith("Recall")))
    write_json_atomic({"protocol": f"sampled-{n_negatives}", "seed": train_cfg["seed"], "test": metrics},
                      run / f"metrics-sampled-{n_negatives}{seed_tag}.json")


def without_results_flag(argv: list[str]) -> list[str]:
    """`argv` less `--results DIR`: a table's Command line says what computed it, and where it was written is the
    file's own place (a table written to a scratch folder, then moved to results/, names the same command)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--results":
            skip = True
        elif not arg.startswith("--results="):
            kept.append(arg)
    return kept


def cmd_reproduce(args, argv: list[str]) -> None:
    from dimerec.reproduce import reproduce

    check_positive(args, "seeds", "max_epochs", "patience", "max_minutes", "max_steps", "valid_max_rows",
                   "final_max_rows", "tune_minutes", "analysis_rows", "checkpoint_every")
    if args.quick:  # the small budget: one seed, 60 steps per run (seconds), small validation samples; the clock
        # is a backstop far above 60 steps' time, so a busy machine still trains the same 60 steps
        args.max_minutes, args.max_steps, args.valid_max_rows = 2.0, 60, 300
        args.tune_minutes, args.analysis_rows = 2.0, 300
    args.seeds = args.seeds or (1 if args.quick else 3)
    extra = ((["--valid-max-rows", str(args.valid_max_rows)] if args.valid_max_rows else [])
             + (["--checkpoint-every", str(args.checkpoint_every)] if args.checkpoint_every else []))
    path = reproduce(args.name, args.dataset, args.seeds, data_dir=args.data_dir, max_minutes=args.max_minutes,
                     max_steps=args.max_steps, final_max_rows=args.final_max_rows, max_epochs=args.max_epochs,
                     patience=args.patience, root=Path(args.runs),
                     out_dir=Path(args.results), extra_flags=extra, tune_grid=args.tune,
                     tune_minutes=args.tune_minutes, analysis_rows=args.analysis_rows,
                     command="python -m dimerec " + shlex.join(without_results_flag(argv)),
                     skip_models=tuple(m for m in (args.skip_models or "").split(",") if m),
                     skip_runs=tuple(r for r in (args.skip_runs or "").split(",") if r), device=args.device,
                     bank=Path(args.bank) if args.bank else None)
    print(path.read_text())
    print(f"written to {path} and {path.with_suffix('.csv')} (figure: .html and .png beside them)")


def cmd_bank(args) -> None:
    import pandas as pd

    from dimerec.runs import Bank, discover_runs

    runs = Path(args.runs)
    if not runs.is_dir():
        raise DimeRecError(f"--runs {runs} is not a folder; give the runs folder of `reproduce` (its --runs)")
    bank = Bank(Path(args.bank), runs)
    candidates = [*discover_runs(runs, max_depth=8).values(),
                  *(p.parent for p in sorted(runs.glob("**/metrics.json")) if not (p.parent / "config.json").exists())]
    saved = [run for run in candidates if bank.save(run)]
    print(f"banked {len(saved)} run(s) from {runs} into {bank.folder}")
    rows = bank.summary()
    if not rows:
        print(f"{bank.folder} holds no run")
        return
    print(pd.DataFrame(rows).to_string(index=False), bank.status(rows), sep="\n")
    print(f"written to {bank.write_status(rows)}")


def cmd_claims(args) -> None:
    from dimerec.claims import write_claims
    from dimerec.diffusion_report import write_diffusion_page

    if not Path(args.results).is_dir():
        raise DimeRecError(f"--results {args.results}: no such folder (it holds the tables `reproduce` writes)")
    path = write_claims(Path(args.results))
    print(path.read_text())
    print(f"written to {path}")
    page = write_diffusion_page(Path(args.results))
    if page is not None:
        print(f"written to {page} (from {page.with_name('DIFFUSION.in.md').name} and the diffusion tables)")


def build_parser(model_name: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m dimerec", description=(
        "DimeRec Explorer: diffusion with multi-interest enhanced recommendation, its baselines, "
        "and the experiments of the paper."))
    sub = parser.add_subparsers(dest="command", required=True)
    add_datasets_parser(sub)
    add_download_parser(sub)
    p = sub.add_parser("train", help="train a model, keep the best checkpoint, evaluate it on test once")
    add_train_arguments(p, model_name)
    add_evaluate_parser(sub)
    add_reproduce_parser(sub)
    add_bank_parser(sub)
    add_claims_parser(sub)
    return parser


def add_data_dir(p: argparse.ArgumentParser) -> None:
    from dimerec.data import DATA_DIR_HELP

    p.add_argument("--data-dir", help=DATA_DIR_HELP)


def add_datasets_parser(sub) -> None:
    p = sub.add_parser("datasets", help="list every dataset found, with its size")
    add_data_dir(p)


def add_download_parser(sub) -> None:
    p = sub.add_parser("download", help="fetch a MovieLens release from GroupLens into the data directory")
    p.add_argument("which", choices=("movielens-1m", "movielens-10m", "movielens-100k"))
    add_data_dir(p)


def add_evaluate_parser(sub) -> None:
    from dimerec.retrieval import RETRIEVERS

    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint; print the metrics and write them to "
                                        "metrics-eval-PROTOCOL-MASKING-RETRIEVER.json (metrics.json is left alone)")
    p.add_argument("run_dir")
    p.add_argument("--data-dir", help="data directory (default: the one the run was trained with)")
    p.add_argument("--protocol", choices=("next-item", "future"),
                   help="default: the run's protocol (a --protocol loo run is scored under loo only)")
    p.add_argument("--mask-seen", action=argparse.BooleanOptionalAction, default=None,
                   help="remove already-seen items from the ranking (default: as trained)")
    p.add_argument("--retriever", choices=tuple(RETRIEVERS), default="torch")
    p.add_argument("--retriever-params",
                   help="faiss-ivf: nlist=N,nprobe=N; faiss-hnsw: M=N,efConstruction=N,efSearch=N (default: the run's "
                        "when --retriever is the run's, else the retriever's defaults)")
    p.add_argument("--seed", type=int,
                   help="seed of the scoring: a denoising model's random starts and, for a run scored on a subsample "
                        "of rows, which rows (default: the run's own seed; another is named in the output file)")
    p.add_argument("--sampled-negatives", type=int, metavar="N",
                   help="instead: rank each test user's last item among N sampled unseen items (SASRec's protocol, "
                        "for sanity checks against the baselines' papers; writes metrics-sampled-N.json)")
    from dimerec.serving import ServeConfig

    add_dataclass_args(p, ServeConfig, "serving, for a model that denoises (default: as the run was served, "
                                       "config.json's \"serving\"; a change is named in the output file)", unset=True)


def add_reproduce_parser(sub) -> None:
    from dimerec.reproduce import DESCRIPTIONS
    from dimerec.runs import BANK_ROOT, REPRODUCE_RUNS

    p = sub.add_parser("reproduce", help="train a set of models over seeds and write a results table and figure",
                       description="Experiments: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    p.add_argument("name", choices=tuple(DESCRIPTIONS), help="which experiment (see above)")
    p.add_argument("--dataset", required=True)
    add_data_dir(p)
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: 3; 1 with --quick)")
    p.add_argument("--max-epochs", type=int, default=50,
                   help="every run trains at most this many epochs (passes over its training targets), validated "
                        "after each, and stops early after --patience epochs without a better validation HR@50 "
                        "(default: 50)")
    p.add_argument("--patience", type=int, default=5, help="early stopping's patience, in validations (default: 5)")
    p.add_argument("--max-minutes", type=float, default=240.0,
                   help="safety net: the wall clock of every run's training (default: 240); a finished run that "
                        "stopped before its own clock is reused under a longer one")
    p.add_argument("--max-steps", type=int,
                   help="also cap every run at this many steps: the same budget on a busy or a quiet machine")
    p.add_argument("--valid-max-rows", type=int, default=20000,
                   help="validation rows sampled for early stopping (final metrics use all; default: 20000)")
    p.add_argument("--final-max-rows", type=int,
                   help="final valid/test metrics on a seeded subsample of rows, the same for every model of a seed "
                        "(default: all rows)")
    p.add_argument("--checkpoint-every", type=int,
                   help="every run also writes its last.pt every this many steps, so a stopped reproduce resumes "
                        "it mid-epoch rather than from its last validation; the same seed trains the same run "
                        "either way (default: a last.pt at each validation only)")
    p.add_argument("--tune", action="store_true",
                   help="first grid-search each model's lr and settings on validation (seed 0); runs go to RUNS/tuned")
    p.add_argument("--tune-minutes", type=float, help="budget of each tuning run (default: --max-minutes)")
    p.add_argument("--analysis-rows", type=int, help="table2: test rows sampled for the diversity count (default: all)")
    p.add_argument("--skip-models", help="comma-separated model names whose rows are left out (said in the table)")
    p.add_argument("--skip-runs", help="comma-separated run names (the NAME of RUNS/DATASET/NAME/seedN, e.g. "
                                       "no-diffusion-control) whose rows are left out, with the rows served from "
                                       "them (said in the table)")
    p.add_argument("--device", default="cpu",
                   help="where the runs train and score: cpu (default) or cuda (the tables' extra analyses stay on the "
                        "CPU); the run's config.json records it, and a finished run is reused whatever device "
                        "trained it")
    p.add_argument("--quick", action="store_true",
                   help="small budget for a smoke run: 60 steps per run, 300 validation rows, 1 seed unless --seeds")
    p.add_argument("--runs", default=str(REPRODUCE_RUNS),
                   help="where the runs go (finished runs are skipped; a second command on the same folder "
                        "trains the runs the first is not training)")
    p.add_argument("--results", default="results", help="where the tables and figures go")
    p.add_argument("--bank", help=f"a folder of banked runs (e.g. {BANK_ROOT}, committed): its runs are restored "
                                  f"into --runs first, finished ones reused and unfinished ones resumed, and each run "
                                  f"goes into it as it finishes (default: no bank)")


def add_bank_parser(sub) -> None:
    from dimerec.runs import BANK_ROOT, CHECKPOINT_LIMIT_MB, REPRODUCE_RUNS

    p = sub.add_parser("bank", help="copy reproduce's runs, finished or resumable, into the bank and list it",
                       description="Copies every run under --runs that finished, or that --resume can continue "
                                   "(its last.pt), into --bank (losses.csv gzipped; a finished run once; a checkpoint "
                                   f"above {CHECKPOINT_LIMIT_MB:g} MB left out), then lists the bank: what a later "
                                   "session restores with `reproduce --bank`.")
    p.add_argument("--runs", default=str(REPRODUCE_RUNS), help=f"the runs folder (default: {REPRODUCE_RUNS})")
    p.add_argument("--bank", default=str(BANK_ROOT), help=f"the bank (default: {BANK_ROOT})")


def add_claims_parser(sub) -> None:
    p = sub.add_parser("claims", help="results/RESULTS.md (every paper claim beside our measurement) and "
                                        "results/DIFFUSION.md (its template filled in), from the tables")
    p.add_argument("--results", default="results", help="the folder of the reproduce tables (default: results)")


def with_notes(err: BaseException) -> str:
    """An error's message and the notes added on its way up (the trainer's: what the run directory keeps), on one
    line."""
    return "; ".join([str(err), *getattr(err, "__notes__", [])])


def main(argv: list[str] | None = None) -> int:
    from dimerec.models import MODELS

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = OneLineParser(prog="python -m dimerec", add_help=False)
    pre.add_argument("--model")
    try:
        known, _ = pre.parse_known_args(argv)
        args = build_parser(known.model).parse_args(argv)
    except SystemExit as done:  # --help, or a flag argparse refused (one line, OneLineParser.error)
        return done.code if isinstance(done.code, int) else 2
    try:
        if args.command in ("reproduce", "evaluate"):  # they write files; only train is data-parallel
            from dimerec.distributed import refuse_multiprocess

            refuse_multiprocess(f"`{args.command}`")
        if args.command == "datasets":
            cmd_datasets(args)
        elif args.command == "download":
            cmd_download(args)
        elif args.command == "train":
            cmd_train(args, MODELS[args.model], argv)
        elif args.command == "evaluate":
            cmd_evaluate(args)
        elif args.command == "bank":
            cmd_bank(args)
        elif args.command == "claims":
            cmd_claims(args)
        elif args.command == "reproduce":
            cmd_reproduce(args, argv)
    except TrainingDiverged as err:
        print(f"error: {with_notes(err)}", file=sys.stderr)
        return 1
    except DimeRecError as err:
        print(f"error: {with_notes(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print("; ".join(["interrupted", *getattr(err, "__notes__", [])]), file=sys.stderr)
        return 130
    return 0
