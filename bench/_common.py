"""What the benchmark scripts share: their command line, printing the figures, the deployed model.

Each script puts the repo root and this directory on ``sys.path`` and imports this module as
``_common``, which works both for ``python bench/x.py`` and for ``bench/run_all.py`` loading a
script from its path.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "model" / "artifacts"

Described = Mapping[str, tuple[str, str]]


def bench_parser(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The scripts' parser: the docstring's first line, ``--quick`` and ``--json FILE``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    return parser


def emit_json(figures: Mapping[str, Any], json_path: str | None) -> None:
    """Print the figures as one JSON line; write that line to ``json_path`` too if given."""
    line = json.dumps(figures)
    print(line)
    if json_path:
        Path(json_path).write_text(line + "\n")


def report(figures: Mapping[str, Any], described: Described, json_path: str | None) -> None:
    """Print each figure with its unit and meaning, then the JSON line; write it if asked."""
    for key, value in figures.items():
        unit, meaning = described.get(key, ("", ""))
        print(f"{key} = {value:,} {unit}  ({meaning})")
    emit_json(figures, json_path)


def standard_main(
    measure: Callable[[bool], Mapping[str, Any]],
    described: Described,
    doc: str | None,
    quick_help: str,
    argv: list[str] | None = None,
) -> None:
    """Parse ``--quick`` and ``--json FILE``, measure, and report the figures."""
    args = bench_parser(doc, quick_help).parse_args(argv)
    report(measure(args.quick), described, args.json)


@contextmanager
def deployed_model(artifacts: Path = ARTIFACTS) -> Iterator[None]:
    """``model.score.init()`` with the artifact directory, as the server's worker runs it."""
    import model.score as score_module

    before = os.environ.get("AZUREML_MODEL_DIR")
    os.environ["AZUREML_MODEL_DIR"] = str(artifacts)
    try:
        score_module.init()
        yield
    finally:
        if before is None:
            os.environ.pop("AZUREML_MODEL_DIR", None)
        else:
            os.environ["AZUREML_MODEL_DIR"] = before
        score_module.init()
