"""What every tool's command line shares: ``--config-file``, ``--output``, trailing ``KEY VALUE``
config overrides, and errors reported in one line.

Overrides follow Detectron2's ``train_net.py``: ``KEY VALUE`` pairs at the end of the command line
(``... MODEL.WEIGHTS out/model_final.pth SOLVER.MAX_ITER 100``). Our tools also have options that
take several values (``--input a.png b.png``), so the overrides start at the first argument that is
a config key (upper case, its first part one of the config's top-level keys) or after ``--opts``
(accepted as in Detectron2's ``demo.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from .errors import UserError

__all__ = ["ToolArgumentParser", "run_tool", "split_overrides"]

# Top-level keys of Detectron2's config plus ours; an override's first part is one of them.
CONFIG_TOP_LEVEL_KEYS = frozenset(
    {
        "CUDNN_BENCHMARK",
        "DATALOADER",
        "DATASETS",
        "FLOAT32_PRECISION",
        "GLOBAL",
        "INPUT",
        "INSTSEG",
        "MODEL",
        "OUTPUT_DIR",
        "SEED",
        "SOLVER",
        "TEST",
        "VERSION",
        "VIS_PERIOD",
    }
)
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def is_config_key(token: str) -> bool:
    """Whether ``token`` reads as a config key such as ``SOLVER.MAX_ITER`` or ``OUTPUT_DIR``."""
    return bool(_KEY.match(token)) and token.split(".", 1)[0] in CONFIG_TOP_LEVEL_KEYS


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(tool arguments, KEY VALUE overrides)`` of a command line."""
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--opts":
            return argv[:i], argv[i + 1 :]
        if is_config_key(token):
            return argv[:i], argv[i:]
    return argv, []


class ToolArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser whose ``parse_args`` puts the trailing overrides in ``args.opts``."""

    def __init__(self, description: str, *, config_file: bool | str = True,
                 output: str | None = None, output_required: bool = True,
                 **kwargs):  # fmt: skip
        """``config_file``: True adds a required ``--config-file``, ``"optional"`` an optional
        one; ``output``: help text of ``--output`` (None: no ``--output``)."""
        super().__init__(description=description, **kwargs)
        self._takes_overrides = bool(config_file)
        if config_file:
            self.add_argument("--config-file", required=config_file is True, metavar="FILE",
                              help="a config YAML, or the config.yaml of a run")  # fmt: skip
        if output is not None:
            self.add_argument("--output", required=output_required, metavar="PATH", help=output)

    def format_usage(self) -> str:
        return self._with_overrides(super().format_usage())

    def format_help(self) -> str:
        text = self._with_overrides(super().format_help())
        if self._takes_overrides:
            text += "\nconfig overrides:\n  KEY VALUE ...         e.g. MODEL.DEVICE cpu SOLVER.MAX_ITER 100\n"
        return text

    def _with_overrides(self, text: str) -> str:
        """Append ``[KEY VALUE ...]`` to the usage (the text up to the first blank line)."""
        if not self._takes_overrides:
            return text
        usage_end = text.find("\n\n")
        usage_end = len(text.rstrip("\n")) if usage_end < 0 else usage_end
        return f"{text[:usage_end]} [KEY VALUE ...]{text[usage_end:]}"

    def parse_args(self, args: Sequence[str] | None = None, namespace=None) -> argparse.Namespace:
        argv = sys.argv[1:] if args is None else list(args)
        own, opts = split_overrides(argv) if self._takes_overrides else (argv, [])
        if len(opts) % 2:
            self.error(f"config overrides come in KEY VALUE pairs, got {len(opts)} words: {opts}")
        parsed = super().parse_args(own, namespace)
        parsed.opts = opts
        return parsed


def run_tool(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a tool's ``main``; a :class:`UserError` becomes ``error: <message>`` and status 1."""
    try:
        return int(main(argv) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
