"""Evaluation of a trained model and the two baselines on the same data, in one run."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ..model.labels import LABEL2ID, LABELS
from .calibration import expected_calibration_error, reliability_bins, softmax
from .data import REPO_ROOT, load_split, resolve

REALNEWS_DEV = REPO_ROOT.parent / "shared" / "eval" / "realnews_dev.jsonl"


@dataclass(frozen=True)
class EvalSet:
    name: str
    texts: list[str]
    labels: np.ndarray
    passages: list[str] | None = None
    """Passage id per statement where the file has them (real-news corpus): the article-level view."""


def parse_eval_spec(spec: str) -> EvalSet:
    """``FILE[:SPLIT]``; a file with a split column defaults to its test split, one without is used whole."""
    path, _, split = spec.partition(":")
    rows = load_split(path)  # read and validated once, then filtered
    split = split or ("test" if any("split" in r for r in rows) else "")
    if split:
        rows = [r for r in rows if r.get("split") == split]
    if not rows:
        raise ValueError(f"{spec}: no rows")
    name = Path(path).stem + (f":{split}" if split else "")
    if all("passage" in r and "position" in r for r in rows):
        rows = sorted(rows, key=lambda r: (r["passage"], r["position"]))
        passages = [str(r["passage"]) for r in rows]
    else:
        passages = None
    return EvalSet(name, [r["text"] for r in rows], np.array([LABEL2ID[r["label"]] for r in rows]), passages)


def default_eval_specs(corpus: str | Path, real_data: str | Path | None = None) -> list[str]:
    """Synthetic test, real-news test (when trained with one) and realnews_dev (when beside the checkout)."""
    specs = [f"{resolve(corpus)}:test"]
    if real_data:
        specs.append(f"{resolve(real_data)}:test")
    if REALNEWS_DEV.is_file():
        specs.append(str(REALNEWS_DEV))
    return specs


def article_view(passages: Sequence[str], labels: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Per passage, the article summary's dominant stance and stance index (the rules of
    ``serve.articles``) from gold labels vs from predictions, and how often a statement without
    stance got one. A passage without stance statements has no stance index; it counts as 0 for the error."""
    from ..serve.articles import dominant_stance, stance_index

    pro, anti, neutral = (LABEL2ID[lab] for lab in ("pro", "anti", "neutral"))
    by_passage: dict[str, list[int]] = {}
    for i, p in enumerate(passages):
        by_passage.setdefault(p, []).append(i)
    agree, errors, spurious_passages = 0, [], 0
    for idx in by_passage.values():
        g, q = labels[idx], pred[idx]
        gp, ga, qp, qa = int((g == pro).sum()), int((g == anti).sum()), int((q == pro).sum()), int((q == anti).sum())
        agree += dominant_stance(gp, ga) == dominant_stance(qp, qa)
        errors.append(abs((stance_index(gp, ga) or 0.0) - (stance_index(qp, qa) or 0.0)))
        spurious_passages += gp + ga == 0 and qp + qa > 0
    no_stance = labels == neutral
    n = len(by_passage)
    return {
        "n_passages": n,
        "dominant_agreement": round(agree / n, 4),
        "stance_index_mae": round(float(np.mean(errors)), 4),
        "no_stance_statements": int(no_stance.sum()),
        "no_stance_given_stance": int((pred[no_stance] != neutral).sum()),
        "no_stance_given_stance_rate": round(float((pred[no_stance] != neutral).mean()), 4) if no_stance.any() else 0.0,
        "passages_without_stance": sum(1 for idx in by_passage.values() if all(labels[i] == neutral for i in idx)),
        "passages_without_stance_given_stance": int(spurious_passages),
    }


def metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    p, r, f, n = precision_recall_fscore_support(labels, pred, labels=range(len(LABELS)), zero_division=0)
    return {
        "n": int(len(labels)),
        "accuracy": round(float(accuracy_score(labels, pred)), 4),
        "macro_f1": round(float(f1_score(labels, pred, average="macro", labels=range(len(LABELS)))), 4),
        "per_class": {lab: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4),
                            "f1": round(float(f[i]), 4), "support": int(n[i])} for i, lab in enumerate(LABELS)},
        "confusion": confusion_matrix(labels, pred, labels=range(len(LABELS))).tolist(),
        "ece": round(expected_calibration_error(probs, labels), 4),
    }


def confusion_text(cm: Sequence[Sequence[int]]) -> str:
    head = "true \\ pred " + "".join(f"{lab:>9}" for lab in LABELS)
    return "\n".join([head] + [f"{lab:<12}" + "".join(f"{v:>9}" for v in row) for lab, row in zip(LABELS, cm)])


def plot_confusion(cm: Sequence[Sequence[int]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    arr = np.asarray(cm)
    ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            ax.text(j, i, str(arr[i, j]), ha="center", va="center",
                    color="white" if arr[i, j] > arr.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(curves: dict[str, np.ndarray], labels: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    for name, probs in curves.items():
        bins = reliability_bins(probs, labels)
        ax.plot([b[0] for b in bins], [b[1] for b in bins], marker="o",
                label=f"{name} (ECE {expected_calibration_error(probs, labels):.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def evaluate(
    model_dir: str | Path,
    eval_specs: Sequence[str],
    corpus: str | Path,
    out_dir: str | Path | None = None,
    baselines: bool = True,
    base_model: str | None = None,
    real_data: str | Path | None = None,
    real_weight: float = 1.0,
) -> dict[str, Any]:
    """Metrics of the model (served exactly as users get it) and the baselines on each eval set.

    The baselines train on what the model trained on: the corpus train split plus the real-news
    train split (``real_data``, rows weighted ``real_weight``), C chosen on the same dev rows."""
    from ..serve.classifier import StanceClassifier

    model_dir = Path(model_dir)
    out = Path(out_dir) if out_dir else model_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    clf = StanceClassifier.load(model_dir)
    temperature = clf.meta.temperature
    systems: dict[str, Callable[[list[str]], np.ndarray]] = {"exportstance": clf.predict_proba}

    if baselines:
        from .baselines import FrozenEncoder, embedding_baseline, tfidf_baseline

        train, dev = load_split(corpus, "train"), load_split(corpus, "dev")
        wt = [1.0] * len(train)
        if real_data:
            real_train = load_split(real_data, "train")
            train, dev = train + real_train, load_split(real_data, "dev")
            wt += [real_weight] * len(real_train)
        xt, yt = [r["text"] for r in train], np.array([LABEL2ID[r["label"]] for r in train])
        xd, yd = [r["text"] for r in dev], np.array([LABEL2ID[r["label"]] for r in dev])
        tfidf = tfidf_baseline(xt, yt, xd, yd, np.array(wt))
        systems["tfidf-char+logreg"] = tfidf.predict_proba
        if base_model:
            systems["frozen-e5+logreg"] = embedding_baseline(FrozenEncoder(base_model), xt, yt, xd, yd, np.array(wt))

    results: dict[str, Any] = {"model": str(model_dir), "temperature": temperature, "sets": {},
                               "engine": f"{clf.backend} {clf.precision}"}
    for spec in eval_specs:
        es = parse_eval_spec(spec)
        per_system = {}
        for name, predict_proba in systems.items():
            probs = np.asarray(predict_proba(es.texts))
            per_system[name] = metrics(probs, es.labels)
            if es.passages is not None:
                per_system[name]["articles"] = article_view(es.passages, es.labels, probs.argmax(axis=1))
            if name == "exportstance":
                # p = softmax(z / T)  =>  softmax(T * log p) = softmax(z): the uncalibrated probabilities.
                raw = softmax(np.log(np.clip(probs, 1e-12, 1.0)) * temperature)
                per_system[name]["ece_uncalibrated"] = round(expected_calibration_error(raw, es.labels), 4)
                per_system[name]["errors"] = [
                    {"text": t, "label": LABELS[y], "pred": LABELS[int(p.argmax())], "confidence": round(float(p.max()), 3)}
                    for t, y, p in zip(es.texts, es.labels, probs) if int(p.argmax()) != int(y)
                ]
                plot_confusion(per_system[name]["confusion"], f"exportstance on {es.name}",
                               out / f"confusion_{_slug(es.name)}.png")
                plot_reliability({"uncalibrated": raw, "calibrated": probs}, es.labels,
                                 f"reliability on {es.name}", out / f"reliability_{_slug(es.name)}.png")
        results["sets"][es.name] = per_system
    (out / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    return results


def format_results(results: dict[str, Any]) -> str:
    """The metrics table printed by `exportstance evaluate` and embedded in the model card."""
    lines = []
    for set_name, systems in results["sets"].items():
        lines.append(f"### {set_name}")
        lines.append("")
        lines.append("| system | n | accuracy | macro-F1 | F1 pro | F1 anti | F1 neutral | ECE |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, m in systems.items():
            pc = m["per_class"]
            ece = f"{m['ece']:.3f}" + (f" (uncal. {m['ece_uncalibrated']:.3f})" if "ece_uncalibrated" in m else "")
            lines.append(f"| {name} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {pc['pro']['f1']:.3f} | "
                         f"{pc['anti']['f1']:.3f} | {pc['neutral']['f1']:.3f} | {ece} |")
        lines.append("")
        lines.append("```")
        lines.append(confusion_text(systems["exportstance"]["confusion"]))
        lines.append("```")
        lines.append("")
        if "articles" in systems["exportstance"]:
            a0 = systems["exportstance"]["articles"]
            lines.append(f"Article-level view ({a0['n_passages']} passages; summary from gold labels vs from "
                         f"predictions; {a0['no_stance_statements']} statements without stance, "
                         f"{a0['passages_without_stance']} passages without any):")
            lines.append("")
            lines.append("| system | neutral precision | dominant stance agrees | stance-index MAE | "
                         "no-stance statements given a stance | no-stance passages given a stance |")
            lines.append("|---|---|---|---|---|---|")
            for name, m in systems.items():
                a = m["articles"]
                lines.append(f"| {name} | {m['per_class']['neutral']['precision']:.3f} | {a['dominant_agreement']:.3f} | "
                             f"{a['stance_index_mae']:.3f} | {a['no_stance_given_stance']} "
                             f"({a['no_stance_given_stance_rate']:.1%}) | {a['passages_without_stance_given_stance']} |")
            lines.append("")
    return "\n".join(lines)
