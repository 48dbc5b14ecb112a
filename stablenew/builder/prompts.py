"""Dynamic-prompt expansion with the ``dynamicprompts`` parser.

``{a|b|c}`` choices, ``{2$$a|b|c}`` multi-choices and ``__wildcard__`` files are parsed by
``dynamicprompts``. Combinatorial mode enumerates the parsed tree here so that the number of
variants is known exactly without expanding (duplicates are kept, as written). Random mode
samples with ``dynamicprompts``' random sampler from an RNG seeded by the pack, so it is
deterministic too.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dynamicprompts.commands import (
    Command,
    LiteralCommand,
    SequenceCommand,
    VariantCommand,
    WildcardCommand,
)
from dynamicprompts.enums import SamplingMethod
from dynamicprompts.parser.parse import parse
from dynamicprompts.sampling_context import SamplingContext
from dynamicprompts.wildcards import WildcardManager

from stablenew.packs.model import PromptMode

MAX_WILDCARD_DEPTH = 8


class PromptProblem(ValueError):
    """A prompt text that cannot be expanded; the message says what was expected."""


class Wildcards:
    """Wildcard files under one directory, each parsed once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._manager = WildcardManager(root)
        self._parsed: dict[str, list[Command]] = {}

    @property
    def manager(self) -> WildcardManager:
        return self._manager

    def values(self, name: str) -> list[Command]:
        """Parsed values of ``__name__``; raise :class:`PromptProblem` if there are none."""
        if name not in self._parsed:
            if not self.root.is_dir():
                raise PromptProblem(f"a wildcard directory {self.root} for __{name}__ (not found)")
            raw = list(self._manager.get_values(name).iterate_string_values_weighted())
            if not raw:
                raise PromptProblem(
                    f"a wildcard file for __{name}__ ({self.root / name}.txt not found or empty)"
                )
            self._parsed[name] = [_parse(v) for v in raw]
        return self._parsed[name]


@dataclass(frozen=True)
class PromptExpansion:
    """The resolved texts of one prompt row; knows how many there are without expanding."""

    command: Command
    mode: PromptMode
    variants: int | None
    wildcards: Wildcards
    rng_seed: str

    def count(self) -> int:
        if self.mode == "random":
            return self.variants or 1
        total = _count(self.command, self.wildcards, 0)
        return min(total, self.variants) if self.variants else total

    def __iter__(self) -> Iterator[str]:
        if self.mode == "random":
            context = SamplingContext(
                default_sampling_method=SamplingMethod.RANDOM,
                wildcard_manager=self.wildcards.manager,
                rand=random.Random(self.rng_seed),
            )
            return (str(r) for r in context.sample_prompts(self.command, self.variants or 1))
        expanded = _expand(self.command, self.wildcards)
        return itertools.islice(expanded, self.variants) if self.variants else expanded


def compile_prompt(
    text: str, *, mode: PromptMode, variants: int | None, wildcards: Wildcards, rng_seed: str
) -> PromptExpansion:
    """Parse and check ``text`` (wildcards exist, syntax fits the mode); raise PromptProblem."""
    try:
        command = _parse(text)
    except Exception as e:  # the parser raises pyparsing's errors; translated once, here
        raise PromptProblem(f"valid dynamic-prompts syntax ({e})") from e
    _check(command, wildcards, mode, 0)
    return PromptExpansion(command, mode, variants, wildcards, rng_seed)


def _parse(text: str) -> Command:
    # dynamicprompts builds its (cached) grammar with pyparsing names deprecated upstream.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pyparsing")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="dynamicprompts")
        return parse(text)


def _children(command: Command) -> Iterator[Command]:
    for f in dataclasses.fields(command):  # type: ignore[arg-type]
        value = getattr(command, f.name)
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            inner = getattr(item, "value", item)  # VariantOption wraps its command
            if isinstance(inner, Command):
                yield inner


def _check(command: Command, wildcards: Wildcards, mode: PromptMode, depth: int) -> None:
    if depth > MAX_WILDCARD_DEPTH:
        raise PromptProblem(f"wildcards nested at most {MAX_WILDCARD_DEPTH} deep (recursive?)")
    if isinstance(command, WildcardCommand):
        if not isinstance(command.wildcard, str):
            if mode == "combinatorial":
                raise PromptProblem("a plain wildcard name in combinatorial mode")
            return
        for value in wildcards.values(command.wildcard):
            _check(value, wildcards, mode, depth + 1)
        return
    if mode == "combinatorial":
        supported = (LiteralCommand, SequenceCommand, VariantCommand)
        if not isinstance(command, supported) or command.sampling_method not in (
            None,
            SamplingMethod.COMBINATORIAL,
        ):
            raise PromptProblem(
                f"syntax combinatorial mode can enumerate ({type(command).__name__} "
                "needs prompt_mode: random)"
            )
    for child in _children(command):
        _check(child, wildcards, mode, depth)


def _options(command: VariantCommand, wildcards: Wildcards) -> tuple[list[Command], int, int]:
    values = list(command.values)
    if len(values) == 1 and isinstance(values[0], WildcardCommand):
        # {2$$__colors__}: the wildcard's values are the options.
        values = wildcards.values(str(values[0].wildcard))
    low, high = min(command.min_bound, len(values)), min(command.max_bound, len(values))
    return values, low, high


def _count(command: Command, wildcards: Wildcards, depth: int) -> int:
    if isinstance(command, LiteralCommand):
        return 1
    if isinstance(command, SequenceCommand):
        return math.prod(_count(t, wildcards, depth) for t in command.tokens)
    if isinstance(command, WildcardCommand):
        values = wildcards.values(str(command.wildcard))
        return sum(_count(v, wildcards, depth + 1) for v in values)
    if isinstance(command, VariantCommand):
        values, low, high = _options(command, wildcards)
        counts = [_count(v, wildcards, depth + 1) for v in values]
        # Ordered picks of k distinct options: k! * e_k(counts) (elementary symmetric sum).
        e = [1] + [0] * high
        for c in counts:
            for k in range(high, 0, -1):
                e[k] += e[k - 1] * c
        return sum(math.factorial(k) * e[k] for k in range(low, high + 1))
    raise PromptProblem(f"no {type(command).__name__} in combinatorial mode")


def _expand(command: Command, wildcards: Wildcards) -> Iterator[str]:
    if isinstance(command, LiteralCommand):
        yield command.literal
    elif isinstance(command, SequenceCommand):
        for parts in _product([_Reiterable(t, wildcards) for t in command.tokens]):
            yield command.separator.join(parts)
    elif isinstance(command, WildcardCommand):
        for value in wildcards.values(str(command.wildcard)):
            yield from _expand(value, wildcards)
    elif isinstance(command, VariantCommand):
        values, low, high = _options(command, wildcards)
        for k in range(low, high + 1):
            for picked in itertools.permutations(values, k):
                for parts in _product([_Reiterable(v, wildcards) for v in picked]):
                    yield command.separator.join(parts)


@dataclass(frozen=True)
class _Reiterable:
    """A re-iterable view of a sub-command's expansions (so products stay lazy)."""

    command: Command
    wildcards: Wildcards

    def __iter__(self) -> Iterator[str]:
        return _expand(self.command, self.wildcards)


def _product(pools: list[_Reiterable]) -> Iterator[tuple[str, ...]]:
    """``itertools.product`` without materializing the pools (memory stays flat)."""
    if not pools:
        yield ()
        return
    first, rest = pools[0], pools[1:]
    for head in first:
        for tail in _product(rest):
            yield (head, *tail)
