"""`exportstance train`, `exportstance evaluate` and `exportstance corpus-stats`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .args import DEFAULT_CONFIG, TrainingArguments, parse_override


def _training_args(ns: argparse.Namespace) -> TrainingArguments:
    overrides: dict[str, Any] = dict(parse_override(item) for item in ns.set or [])
    for key in ("base_model", "output_dir", "data"):
        if getattr(ns, key, None):
            overrides[key] = getattr(ns, key)
    return TrainingArguments.from_toml(ns.config, overrides)


def stale_reason(out: Path, args: TrainingArguments) -> str | None:
    """Why the model dir ``out`` must be (re)built for ``args``, or None if it can stay.

    Reads config.json only (no weights): a model is kept when it is complete, has our labels and was
    trained from the same corpus bytes and the same arguments. A model trained elsewhere (no training
    record in its config) is never overwritten by ``--if-missing``."""
    from ..model.format import ModelNotFoundError, check_labels, read_config
    from .trainer import data_sha256

    try:
        config = read_config(out)
        check_labels(config.get("id2label"), out)
    except ModelNotFoundError:
        return f"no model at {out}"
    except (OSError, ValueError) as exc:
        return f"unusable model at {out} ({exc})"
    record = config.get("exportstance_training")
    if record is None:
        return None
    if record.get("data_sha256") != data_sha256(args):
        data = f"{args.data} + {args.real_data}" if args.real_data else args.data
        return f"the model at {out} was trained on another version of {data}"
    if record.get("arguments") != args.to_dict():
        return f"the model at {out} was trained with other arguments"
    return None


def cmd_train(ns: argparse.Namespace) -> int:
    from .evaluate import default_eval_specs, evaluate, format_results
    from .model_card import write_model_card
    from .trainer import resolve_base_model, resolve_output_dir, train

    args = _training_args(ns)
    out = resolve_output_dir(args.output_dir)
    if ns.if_missing:
        reason = stale_reason(out, args)
        if reason is None:
            print(f"model at {out} is up to date; not retraining (drop --if-missing to retrain)")
            return 0
        print(f"training: {reason}")
    result = train(args, progress=not ns.quiet)
    print(f"trained in {result.seconds / 60:.1f} min ({result.precision}): best epoch {result.best_epoch}, dev "
          f"{result.select_metric} {result.dev_scores}, temperature {result.temperature:.3f} (fitted on "
          f"{result.calibration_n} {args.calibrate_on} dev statements), ECE there "
          f"{result.dev_ece_before:.3f} -> {result.dev_ece_after:.3f}; saved to {out}")
    if not ns.no_eval:
        results = evaluate(out, default_eval_specs(args.data, args.real_data), args.data,
                           base_model=resolve_base_model(args.base_model), real_data=args.real_data,
                           real_weight=args.real_weight)
        print(format_results(results))
        print(f"model card: {write_model_card(result, args, results)}")
    return 0


def cmd_evaluate(ns: argparse.Namespace) -> int:
    from ..model.paths import default_model_dir
    from .evaluate import default_eval_specs, evaluate, format_results
    from .trainer import resolve_base_model

    model_dir = Path(ns.model) if ns.model else default_model_dir()
    # A model trained by `exportstance train` records its corpus and base; one from elsewhere gets ours.
    args_file = model_dir / "training_args.json"
    trained = json.loads(args_file.read_text(encoding="utf-8")) if args_file.is_file() else TrainingArguments().to_dict()
    corpus = ns.corpus or trained["data"]
    real = None if ns.corpus else trained.get("real_data")  # --corpus names the baselines' data alone
    specs = ns.data or default_eval_specs(corpus, real)
    base = None if ns.no_baselines else resolve_base_model(ns.base_model or trained["base_model"])
    results = evaluate(model_dir, specs, corpus, out_dir=ns.out, baselines=not ns.no_baselines, base_model=base,
                       real_data=real, real_weight=trained.get("real_weight", 1.0))
    print(format_results(results))
    return 0


def cmd_stats(ns: argparse.Namespace) -> int:
    from .data import corpus_stats, format_stats, read_jsonl, resolve

    files = ns.data or [p for p in ("labels/corpus.jsonl", "labels/realnews.jsonl") if resolve(p).is_file()]
    stats = {f: corpus_stats(read_jsonl(f)) for f in files}
    if len(files) > 1:
        stats["all"] = corpus_stats([r for f in files for r in read_jsonl(f)])
    if ns.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(f"== {name} ==\n{format_stats(s)}" for name, s in stats.items()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a classifier (default: the default model from the default config)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="TOML run config (default: %(default)s)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config option (repeatable)")
    p.add_argument("--base-model", help="HF id or local dir of the encoder (default: offline e5-small)")
    p.add_argument("--output-dir", help="where to save the model (default: the default model location)")
    p.add_argument("--data", help="corpus JSONL with text/label/split")
    p.add_argument("--if-missing", action="store_true", help="do nothing if a model already exists there")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation and model card")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch log lines")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics, confusion matrix, calibration and baselines for a model")
    p.add_argument("--model", help="trained model dir (default: the default model)")
    p.add_argument("--data", nargs="+", metavar="FILE[:SPLIT]",
                   help="eval sets (default: corpus test split and ../shared/eval/realnews_dev.jsonl)")
    p.add_argument("--corpus", help="corpus whose train/dev splits train the baselines (default: the model's "
                                    "corpus and real-news corpus)")
    p.add_argument("--base-model", help="encoder for the frozen-embedding baseline (default: the model's base)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--out", help="where plots and eval_results.json go (default: MODEL/eval)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("corpus-stats", help="counts by source, label, split, actor, topic and form")
    p.add_argument("--data", nargs="+", help="corpus files (default: labels/corpus.jsonl and labels/realnews.jsonl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)
