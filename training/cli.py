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
    from .data import file_sha256

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
    if record.get("data_sha256") != file_sha256(args.data):
        return f"the model at {out} was trained on another version of {args.data}"
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
    print(f"trained in {result.seconds / 60:.1f} min: best epoch {result.best_epoch}, dev "
          f"{result.select_metric} {result.dev_score:.3f}, temperature {result.temperature:.3f}, dev ECE "
          f"{result.dev_ece_before:.3f} -> {result.dev_ece_after:.3f}; saved to {out}")
    if not ns.no_eval:
        results = evaluate(out, default_eval_specs(args.data), args.data,
                           base_model=resolve_base_model(args.base_model))
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
    specs = ns.data or default_eval_specs(corpus)
    base = None if ns.no_baselines else resolve_base_model(ns.base_model or trained["base_model"])
    results = evaluate(model_dir, specs, corpus, out_dir=ns.out, baselines=not ns.no_baselines, base_model=base)
    print(format_results(results))
    return 0


def cmd_stats(ns: argparse.Namespace) -> int:
    from .data import corpus_stats, format_stats, read_jsonl

    stats = corpus_stats(read_jsonl(ns.data))
    print(json.dumps(stats, indent=2, ensure_ascii=False) if ns.json else format_stats(stats))
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
    p.add_argument("--corpus", help="corpus whose train/dev splits train the baselines (default: the model's)")
    p.add_argument("--base-model", help="encoder for the frozen-embedding baseline (default: the model's base)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--out", help="where plots and eval_results.json go (default: MODEL/eval)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("corpus-stats", help="counts by label, split, actor, topic and form")
    p.add_argument("--data", default="labels/corpus.jsonl")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)
