"""A real text classification task that works offline: standard-library docstrings labelled by
the top-level package they come from, split by module so that no module spans two splits.

How it is built (`load_docstrings`):

1. Walk every module of the packages in `_PACKAGES` (submodules recursively), skipping test
   packages (`test`, `tests`, `test_*`), `__main__` modules and modules this interpreter cannot
   import. Not walked at all: `idlelib` and `turtledemo` (GUI code that starts on import),
   `encodings` (generated codec boilerplate) and `test`.
2. From each module take the docstrings of the module itself, of the public classes and
   routines *defined in it* (`__module__` equal to its name, so a package's re-exports stay
   with the submodule that defines them) and of those classes' public methods and properties
   written there (not ones another library added later, so imports elsewhere change nothing);
   keep each docstring's first prose paragraph (not a bare call signature), whitespace-
   normalised, of at least `min_chars` characters.
3. Exact duplicates: a text found under two packages is dropped (its label is ambiguous); a
   text found in several modules of one package is kept once, in the first module by name.
4. Classes are the packages with at least `min_samples` texts in at least 3 modules.
5. Split by module: per class, modules in decreasing size (ties by name); the largest goes to
   train, the next to test, the third to calib, and each further one (in an order shuffled by
   `seed`) to the split furthest below its 60/20/20 share of the class. Every class is thus in
   every split and near-duplicates within a module (a class and its subclass's overrides) do
   not leak from train into calib or test.

Measured on CPython 3.11.7 with the defaults (seed 0; about 2 s): 12 classes and 1,837 texts --
tkinter 483, distutils 167, email 165, xml 142, logging 142, asyncio 139, lib2to3 136, importlib
118, multiprocessing 104, unittest 100, http 74, urllib 67 -- split 1,130 / 349 / 358 (train /
calib / test; whole modules cannot hit 60/20/20 exactly: logging's texts come from 3 modules).
distutils and lib2to3 are gone in 3.12 and tkinter needs Tk, so other Pythons see fewer classes.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import pkgutil
import random
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ponder._core.errors import ConfigError

__all__ = ["TextSplit", "TextSplits", "load_docstrings"]

_log = logging.getLogger(__name__)

# Standard-library packages with submodules; each that passes the size rule becomes a class.
_PACKAGES = (
    "asyncio",
    "collections",
    "concurrent",
    "ctypes",
    "curses",
    "dbm",
    "distutils",
    "email",
    "html",
    "http",
    "importlib",
    "json",
    "lib2to3",
    "logging",
    "multiprocessing",
    "sqlite3",
    "tkinter",
    "tomllib",
    "unittest",
    "urllib",
    "wsgiref",
    "xml",
    "xmlrpc",
    "zoneinfo",
)
_FRACTIONS = (0.6, 0.2, 0.2)  # train, calib, test: the shares the module assignment aims at
_MIN_MODULES = 3  # one whole module per split at least
# A first paragraph that is only a call signature ("S.join(iterable) -> str"), not prose.
_SIGNATURE = re.compile(r"^[\w.\[\]]+\(.*\)(\s*->.*)?$")


@dataclass(frozen=True)
class TextSplit:
    """One part of the task: raw texts, their int labels and the module each text came from."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    modules: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextSplits:
    """Train / calibration / test parts of a text task. Not a `ponder.data.Splits`, whose `x`
    is tensors: tokenizing is the model's job (`tokenize` does it with a transformers
    tokenizer)."""

    train: TextSplit
    calib: TextSplit
    test: TextSplit
    name: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def tokenize(self, tokenizer: Any, max_length: int = 128):
        """A `ponder.data.Splits` whose `x` are the tokenizer's {input_ids, attention_mask,
        ...} [N, T] per split (padded to the split's longest text, truncated at `max_length`)."""
        import torch

        from ponder.data.datasets import Split, Splits

        def one(part: TextSplit) -> Split:
            enc = tokenizer(
                list(part.texts),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            return Split(dict(enc), torch.tensor(part.labels, dtype=torch.int64))

        return Splits(
            train=one(self.train),
            calib=one(self.calib),
            test=one(self.test),
            name=self.name,
            num_classes=self.num_classes,
            input_shape=(max_length,),
            classes=self.classes,
        )


def load_docstrings(seed: int = 0, min_samples: int = 60, min_chars: int = 40) -> TextSplits:
    """Standard-library docstrings labelled by top-level package, split by module (see the
    module docstring for how; 12 classes and 1,837 texts on CPython 3.11 with the defaults)."""
    if min_samples < 1 or min_chars < 1:
        raise ConfigError(f"min_samples and min_chars must be >= 1, got {min_samples}, {min_chars}")
    by_module = _texts_by_module(min_chars)  # package -> module -> sorted texts
    classes = tuple(
        sorted(
            package
            for package, modules in by_module.items()
            if sum(map(len, modules.values())) >= min_samples and len(modules) >= _MIN_MODULES
        )
    )
    if not classes:
        raise ConfigError(
            f"no standard-library package has {min_samples} docstrings in {_MIN_MODULES} "
            "modules on this Python; lower min_samples"
        )
    parts: tuple[list[tuple[str, int, str]], ...] = ([], [], [])
    for label, package in enumerate(classes):
        modules = by_module[package]
        for split, names in zip(parts, _assign_modules(modules, seed), strict=True):
            split.extend((text, label, name) for name in names for text in modules[name])
    rng = random.Random(seed)
    for split in parts:
        split.sort()
        rng.shuffle(split)
    train, calib, test = (TextSplit(*map(tuple, zip(*split, strict=True))) for split in parts)
    return TextSplits(train, calib, test, "docstrings", classes)


def _assign_modules(modules: dict[str, list[str]], seed: int) -> tuple[list[str], ...]:
    """Module names for train, calib and test: the three largest seed each split (train, test,
    calib), the rest go to the split furthest below its share of the texts."""
    order = sorted(modules, key=lambda name: (-len(modules[name]), name))
    rest = order[3:]
    random.Random(seed).shuffle(rest)
    total = sum(map(len, modules.values()))
    parts: tuple[list[str], ...] = ([order[0]], [order[2]], [order[1]])
    sizes = [len(modules[p[0]]) for p in parts]
    for name in rest:
        deficits = [f * total - s for f, s in zip(_FRACTIONS, sizes, strict=True)]
        i = max(range(3), key=lambda j: deficits[j])
        parts[i].append(name)
        sizes[i] += len(modules[name])
    return parts


@functools.cache
def _texts_by_module(min_chars: int) -> dict[str, dict[str, list[str]]]:
    """package -> module -> its texts (sorted), exact duplicates resolved as the module
    docstring says. Cached: walking the packages takes about 2 s."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)  # text -> {(package, module)}
    for package in _PACKAGES:
        for name in _module_names(package):
            for text in _docstrings(name, min_chars):
                found[text].add((package, name))
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for text, places in sorted(found.items()):
        if len({package for package, _ in places}) == 1:
            package, name = min(places, key=lambda p: p[1])
            out[package][name].append(text)
    return {p: dict(m) for p, m in out.items()}


def _skipped(name: str) -> bool:
    parts = name.split(".")
    return any(p in ("test", "tests", "__main__") or p.startswith("test_") for p in parts)


def _import(name: str) -> Any | None:
    with warnings.catch_warnings():  # distutils, lib2to3 and a few more warn of deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module(name)
        except ImportError:  # platform modules (asyncio.windows_events), missing C parts
            _log.info("standard-library module %s is not available; skipped", name)
            return None


def _module_names(package: str) -> Iterator[str]:
    """The package and its submodules, depth first in name order, test packages left out."""
    module = _import(package)
    if module is None:
        return
    yield package
    for info in sorted(pkgutil.iter_modules(getattr(module, "__path__", []), f"{package}.")):
        if _skipped(info.name):
            continue
        if info.ispkg:
            yield from _module_names(info.name)
        elif _import(info.name) is not None:
            yield info.name


def _docstrings(name: str, min_chars: int) -> set[str]:
    """First prose paragraphs of the docstrings of a module and what it defines."""
    module = _import(name)
    texts = set()
    with warnings.catch_warnings():  # some members warn of deprecation when read
        warnings.simplefilter("ignore", DeprecationWarning)
        for obj in _defined_objects(module, name):
            doc = getattr(obj, "__doc__", None)
            text = first_paragraph(doc) if isinstance(doc, str) else None
            if text is not None and len(text) >= min_chars:
                texts.add(text)
    return texts


def _defined_objects(module: Any, name: str) -> list[Any]:
    """The module, the public classes and routines defined in it, and those classes' own
    public methods and properties."""
    objects: list[Any] = [module]
    for member_name, member in sorted(vars(module).items()):
        is_defined = getattr(member, "__module__", None) == name
        if member_name.startswith("_") or not is_defined:
            continue
        if inspect.isroutine(member):
            objects.append(member)
        elif inspect.isclass(member):
            objects.append(member)
            for attr, value in sorted(vars(member).items()):
                if isinstance(value, staticmethod | classmethod):
                    value = value.__func__
                if not attr.startswith("_") and _own_member(value, name):
                    objects.append(value)
    return objects


def _own_member(value: Any, name: str) -> bool:
    """A method or property written in module `name`: not one that another library added to
    the class later (transformers adds `warning_once` and more to `logging.Logger`), so the
    texts do not depend on what else the process imported."""
    if not (inspect.isroutine(value) or inspect.isdatadescriptor(value)):
        return False
    owner = getattr(value, "__module__", None) or getattr(
        getattr(value, "fget", None), "__module__", None
    )
    return owner is None or owner == name


def first_paragraph(doc: str) -> str | None:
    """The first blank-line-separated paragraph that is prose, whitespace-normalised."""
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
        text = " ".join(paragraph.split())
        if text and not _SIGNATURE.match(text):
            return text
    return None
