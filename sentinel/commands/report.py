"""`sentinel report`: a one-page review of pruned models against their base, as one self-contained HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from sentinel.commands.common import add_task_arguments, print_json, task_selection


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command."""
    p = subparsers.add_parser("report", help="write a one-page review (HTML) of pruned models against their base",
                              description=__doc__)
    p.add_argument("--base", default=None, help="the base model: a folder or hub id (default: the bundled model)")
    p.add_argument("--model", action="append", required=True, help="a pruned model folder (repeat for several)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier Sentinel report at --out")
    p.add_argument("--max-perplexity-increase", type=float, default=0.05,
                   help="allowed perplexity rise as a fraction (default: 0.05 = 5%%)")
    p.add_argument("--min-size-reduction", type=float, default=0.0,
                   help="required parameter reduction as a fraction (default: 0)")
    p.add_argument("--min-speedup", type=float, default=None,
                   help="required prefill speed-up in every timed pair, e.g. 1.2 (default: no requirement)")
    p.add_argument("--prompt", action="append", default=None,
                   help="a prompt for the before/after generations (repeat; default: the base model's sample prompts)")
    p.add_argument("--speed-rounds", type=int, default=5, help="interleaved timing rounds (0: do not time)")
    add_task_arguments(p, "whose accuracy is shown beside perplexity, for every model")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--json", action="store_true", help="also print the review's numbers as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load every model, measure, judge, write the HTML; returns the exit code."""
    from sentinel.demo.prompts import SAMPLE_COUNT, prompts_for
    from sentinel.errors import DataError
    from sentinel.files import check_new_file
    from sentinel.models import load_model
    from sentinel.review import ReviewCriteria, ReviewSubject, build_review, write_report

    if args.speed_rounds < 0 or args.speed_rounds == 1:
        raise DataError(f"--speed-rounds must be 0 (no timing) or at least 2 (a spread), got {args.speed_rounds}.")
    criteria = ReviewCriteria(args.max_perplexity_increase, args.min_size_reduction, args.min_speedup)
    criteria.validate()
    check_new_file(args.out, overwrite=args.overwrite)        # fail before minutes of measuring
    selection = task_selection(args)
    base = load_model(args.base, device=args.device)
    base_name = Path(base.source).name if args.base is None else args.base
    prompts = args.prompt or list(prompts_for(Path(base.source).name)[:SAMPLE_COUNT])
    subjects = []
    for number, folder in enumerate(args.model, start=1):
        loaded = load_model(folder, device=args.device)
        subjects.append(ReviewSubject(f"pruned {number}" if len(args.model) > 1 else "pruned", folder,
                                      loaded.model, loaded.tokenizer, loaded.source))
    review = build_review(ReviewSubject("base", base_name, base.model, base.tokenizer, base.source), subjects,
                          criteria, prompts, speed_rounds=args.speed_rounds, tasks=selection,
                          task_limit=args.task_limit)
    path = write_report(review, args.out, overwrite=args.overwrite)
    if args.json:
        print_json({"report": str(path), **review.to_dict()})
    else:
        for verdict in review.verdicts:
            print(f"{verdict.status.upper():13s}{verdict.headline()}")
            for c in verdict.criteria:
                print(f"  {c.name:11s}{c.status:13s}{c.measured} (required: {c.required})")
        for facts in (review.base, *review.models):
            for t in facts.tasks:
                print(f"task        {facts.label}: {t.task} {t.text()}")
        print(f"report      {path}")
    return 0
