"""Language datasets as padded token ids: word → language, and WordNet gloss → supersense.

Inputs are int64 arrays N×L of token ids, padded with 0 (``<pad>``); id 1 is ``<unk>``. The
vocabulary is built from the train split only, ordered by decreasing frequency then by token,
so it is deterministic and test tokens never seen in training map to ``<unk>``. ``info`` holds
the vocabulary (index = id), the tokenizer settings and ``model_args`` (``vocab_size``,
``pad_id``) for embedding models. A tokenizer saved with :meth:`to_dict` and restored with
:func:`tokenizer_from_dict` reproduces the encoding exactly.

* ``word-language``: single words from the Debian word lists in ``/usr/share/dict``
  (``wamerican``, ``wfrench``, ``wngerman``, ...), classified by language at character level.
* ``wordnet-supersense``: WordNet 3.0 definitions (Debian ``wordnet-base``), classified by the
  lexicographer file (supersense) of their synset, at word level.
"""

from __future__ import annotations

import inspect
import re
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SpecError
from .base import DATASETS
from .bundle import DataBundle, to_bundle
from .tokenize import PAD_ID, WORD_PATTERN, CharTokenizer, Tokenizer, WordTokenizer
from .tokenize import tokenizer_from_dict as tokenizer_from_dict

# --------------------------------------------------------------------------- shared helpers


def _check_split_options(name: str, per_class: int, test_fraction: float) -> tuple[int, int]:
    """Per-class (train, test) counts of a balanced split; both must be at least 1."""
    if not 0 < test_fraction < 1:
        raise SpecError(f"{name}: test_fraction must lie in (0, 1), got {test_fraction}")
    n_test = int(round(per_class * test_fraction))
    if per_class < 2 or n_test < 1 or n_test >= per_class:
        raise SpecError(f"{name}: per_class={per_class} with test_fraction={test_fraction} leaves an empty split")
    return per_class - n_test, n_test


def _class_rng(seed: int, name: str) -> np.random.Generator:
    """A class's own generator: its draw does not depend on which other classes are chosen."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _balanced_split(
    picked: list[list[str]], n_test: int, seed: int
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Train and test texts and labels (label = position in ``picked``): the first ``n_test``
    items of each class go to test, the rest to train; each split is then shuffled with ``seed``."""
    tr_x: list[str] = []
    tr_y: list[int] = []
    te_x: list[str] = []
    te_y: list[int] = []
    for label, items in enumerate(picked):
        te_x += items[:n_test]
        te_y += [label] * n_test
        tr_x += items[n_test:]
        tr_y += [label] * (len(items) - n_test)
    rng = np.random.default_rng(seed)
    p_tr, p_te = rng.permutation(len(tr_x)), rng.permutation(len(te_x))
    return (
        [tr_x[i] for i in p_tr],
        np.asarray(tr_y, dtype=np.int64)[p_tr],
        [te_x[i] for i in p_te],
        np.asarray(te_y, dtype=np.int64)[p_te],
    )


def _name_list(value: list[str] | str) -> list[str]:
    """An option naming several things: a list, or one string of comma-separated names."""
    return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)


@dataclass
class TextSplits:
    """Texts and labels of a balanced train/test split, and the tokenizer fitted on the train texts."""

    train: list[str]
    y_train: np.ndarray
    test: list[str]
    y_test: np.ndarray
    classes: list[str]
    source: str
    tokenizer: Tokenizer
    extra: dict[str, Any] = field(default_factory=dict)

    def bundle(
        self, name: str, train_subset: int | None = None, test_subset: int | None = None, subset_seed: int = 0
    ) -> DataBundle:
        """Both splits encoded with the tokenizer, as a DataBundle."""
        tok = self.tokenizer
        info = {
            "source": self.source,
            "classes": self.classes,
            "modality": "text",
            "vocab": list(tok.vocab),
            "tokenizer": tok.settings(),
            "model_args": {"vocab_size": len(tok.vocab), "pad_id": PAD_ID},
            **self.extra,
        }
        return to_bundle(
            name,
            tok.encode(self.train),
            self.y_train,
            tok.encode(self.test),
            self.y_test,
            len(self.classes),
            train_subset=train_subset,
            test_subset=test_subset,
            subset_seed=subset_seed,
            info=info,
        )


_SUBSET_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
    for name, default, annotation in (
        ("train_subset", None, "int | None"),
        ("test_subset", None, "int | None"),
        ("subset_seed", 0, "int"),
    )
]


def _text_dataset(name: str, texts: Callable[..., TextSplits]) -> Callable[..., DataBundle]:
    """The dataset factory ``name``: ``texts(**options)`` encoded as a DataBundle. Its options
    (its signature, which :func:`~kdaudit.data.base.load_dataset` checks) are those of ``texts``,
    then ``train_subset``, ``test_subset`` and ``subset_seed``."""

    def factory(**options: Any) -> DataBundle:
        subsets = {p.name: options.pop(p.name) for p in _SUBSET_OPTIONS if p.name in options}
        return texts(**options).bundle(name, **subsets)

    params = [*inspect.signature(texts).parameters.values(), *_SUBSET_OPTIONS]
    factory.__signature__ = inspect.Signature(params, return_annotation="DataBundle")  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = name.replace("-", "_")
    factory.__doc__ = texts.__doc__
    return factory


# --------------------------------------------------------------------------- word-language

DICT_DIR = Path("/usr/share/dict")
# language name → (file in /usr/share/dict, Debian package that installs it)
WORD_LISTS: dict[str, tuple[str, str]] = {
    "english": ("american-english", "wamerican"),
    "french": ("french", "wfrench"),
    "german": ("ngerman", "wngerman"),
    "spanish": ("spanish", "wspanish"),
    "italian": ("italian", "witalian"),
    "dutch": ("dutch", "wdutch"),
    "portuguese": ("portuguese", "wportuguese"),
    "swedish": ("swedish", "wswedish"),
    "danish": ("danish", "wdanish"),
}
DEFAULT_LANGUAGES = list(WORD_LISTS)
_NOT_TEXT = re.compile("[\x00\x80-\x9f]")  # NUL or C1 controls: binary, or not ISO-8859-1


def read_word_list(path: Path, package: str) -> tuple[str, str]:
    """The text of a word list (NFC-normalised) and the encoding it was read with.

    Lists are UTF-8 except a few older ones (Debian 12's ``wswedish`` is ISO-8859-1): a file
    that is not valid UTF-8 is read as ISO-8859-1 if that yields text without control
    characters, otherwise it is rejected.
    """
    if not path.is_file():
        raise InputError(
            f"word list {path} not found; install it with `apt-get install {package}` "
            "or point data_dir at a folder that has it"
        )
    raw = path.read_bytes()
    try:
        text, encoding = raw.decode("utf-8", errors="strict"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = raw.decode("iso-8859-1"), "iso-8859-1"
    if _NOT_TEXT.search(text):
        raise InputError(f"word list {path} is not UTF-8 or ISO-8859-1 text")
    return (text if text.isascii() else unicodedata.normalize("NFC", text)), encoding


def word_forms(text: str) -> set[str]:
    """Every lowercased whitespace-separated item of a list: what counts as "in the list" when
    looking for words shared between languages (capitalised and non-word entries included)."""
    return set(text.lower().split())


def is_eligible(entry: str, min_len: int, max_len: int) -> bool:
    """Whether a list entry may serve as an input word.

    Kept: entries made of letters only (no apostrophe or possessive 's, hyphen, digit, dot,
    space), with no uppercase letter in the list (capitalised entries are mostly names and
    abbreviations; note this also drops German nouns), of ``min_len`` to ``max_len``
    characters. Longer words are dropped, not truncated, so an input is always a whole word.
    """
    return entry.isalpha() and entry.islower() and min_len <= len(entry) <= max_len


def draw_words(
    lines: list[str],
    others: list[set[str]],
    per_class: int,
    min_len: int,
    max_len: int,
    rng: np.random.Generator,
) -> list[str]:
    """Up to ``per_class`` distinct eligible words of one list that are in none of ``others``,
    drawn uniformly: the lines are visited in a random order and the first eligible ones kept
    (all of them if there are fewer)."""
    picked: dict[str, None] = {}
    for i in rng.permutation(len(lines)).tolist():
        w = lines[i].strip()
        if w not in picked and is_eligible(w, min_len, max_len) and not any(w in o for o in others):
            picked[w] = None
            if len(picked) == per_class:
                break
    return list(picked)


def _languages(languages: list[str] | str | None) -> list[str]:
    if languages is None:
        return list(DEFAULT_LANGUAGES)
    langs = [str(lang).lower() for lang in _name_list(languages)]
    unknown = [lang for lang in langs if lang not in WORD_LISTS]
    if unknown:
        raise SpecError(f"word-language: unknown language(s) {', '.join(unknown)}; known: {', '.join(WORD_LISTS)}")
    if len(set(langs)) != len(langs) or len(langs) < 2:
        raise SpecError(f"word-language: languages must be at least 2 distinct names, got {langs}")
    return langs


def word_language_texts(
    languages: list[str] | str | None = None,
    per_class: int = 3000,
    test_fraction: float = 0.2,
    min_len: int = 3,
    max_len: int = 16,
    seed: int = 0,
    data_dir: str | None = None,
) -> TextSplits:
    """Which language is a word from? Character ids of single lowercase words, one class per
    language, ``per_class`` words each (train + test, balanced in both splits).

    Every word that appears (lowercased, in any form) in more than one of the selected lists is
    dropped from all of them, so each input has exactly one right answer. ``data_dir`` replaces
    ``/usr/share/dict``; ``seed`` fixes the sample and the split.
    """
    name = "word-language"
    langs = _languages(languages)
    if min_len < 1 or max_len < min_len:
        raise SpecError(f"{name}: need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    _, n_test = _check_split_options(name, per_class, test_fraction)
    root = Path(data_dir).expanduser() if data_dir else DICT_DIR

    lines: dict[str, list[str]] = {}
    forms: dict[str, set[str]] = {}  # everything in a list, to find words shared by two lists
    encodings: dict[str, str] = {}
    for lang in langs:
        fname, package = WORD_LISTS[lang]
        text, encodings[lang] = read_word_list(root / fname, package)
        lines[lang] = text.splitlines()
        forms[lang] = word_forms(text)
    picked: list[list[str]] = []
    for lang in langs:
        others = [forms[o] for o in langs if o != lang]
        words = draw_words(lines[lang], others, per_class, min_len, max_len, _class_rng(seed, lang))
        if len(words) < per_class:
            raise InputError(
                f"{name}: {lang} ({root / WORD_LISTS[lang][0]}) has only {len(words)} eligible words "
                f"of {min_len}-{max_len} letters found in no other selected list; per_class={per_class}"
            )
        picked.append(words)
    files = ", ".join(WORD_LISTS[lang][0] for lang in langs)
    train, y_train, test, y_test = _balanced_split(picked, n_test, seed)
    return TextSplits(
        train,
        y_train,
        test,
        y_test,
        classes=langs,
        source=f"Debian word lists in {root} ({files})",
        tokenizer=CharTokenizer(max_len=max_len).fit(train),
        extra={"encodings": encodings},
    )


word_language = DATASETS.register("word-language")(_text_dataset("word-language", word_language_texts))


# --------------------------------------------------------------------------- wordnet-supersense

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_POS = ("noun", "verb", "adj", "adv")
# The 45 WordNet lexicographer files (lexnames(5WN)); index = lex_filenum.
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]


def parse_synset_line(line: str) -> tuple[int, str] | None:
    """``(lex_filenum, definition)`` of one line of a WordNet ``data.*`` file; None for the
    license header (lines starting with two spaces) and blank lines.

    The gloss is the text after ``" | "``; only the definition is kept, i.e. the text before
    the first quoted example (``'; "'``), so the class is predicted from the definition alone.
    """
    if not line.strip() or line.startswith("  "):
        return None
    head, sep, gloss = line.partition(" | ")
    fields = head.split(" ", 2)
    if not sep or len(fields) < 3 or not re.fullmatch(r"\d{2}", fields[1]):
        raise ValueError("not a WordNet data line (offset lex_filenum ss_type ... | gloss)")
    lex = int(fields[1])
    if lex >= len(LEXNAMES):
        raise ValueError(f"lex_filenum {lex} is not in 0..{len(LEXNAMES) - 1}")
    return lex, gloss.split('; "', 1)[0].strip()


def read_wordnet(root: Path, pos: Sequence[str]) -> list[tuple[int, str]]:
    """``(lex_filenum, definition)`` of every synset in the ``data.<pos>`` files, in file order."""
    out: list[tuple[int, str]] = []
    for p in pos:
        path = root / f"data.{p}"
        if not path.is_file():
            raise InputError(
                f"WordNet file {path} not found; install it with `apt-get install wordnet-base` "
                "or point data_dir at a WordNet 3.0 dict folder"
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise InputError(f"WordNet file {path} is not UTF-8 text") from None
        for n, line in enumerate(lines, 1):
            try:
                parsed = parse_synset_line(line)
            except ValueError as exc:
                raise InputError(f"{path}:{n}: {exc}") from None
            if parsed is not None:
                out.append(parsed)
    return out


def wordnet_supersense_texts(
    classes: int = 8,
    per_class: int = 1500,
    test_fraction: float = 0.2,
    max_len: int = 24,
    min_count: int = 2,
    max_vocab: int = 8000,
    pos: list[str] | str | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> TextSplits:
    """Which lexicographer file (supersense, e.g. ``noun.animal``) does a WordNet definition
    belong to? Word ids of the definition (first ``max_len`` words), ``per_class`` synsets of
    each of the ``classes`` largest lexicographer files (size counted after the deduplication
    below, ties by file number; labels ordered by file number).

    A definition whose words occur in more than one lexicographer file is dropped, and repeats
    within one file are kept once, so identical inputs never carry different labels or sit in
    both splits. The vocabulary: train words seen at least ``min_count`` times, at most
    ``max_vocab`` ids including ``<pad>`` and ``<unk>``. ``pos`` picks the ``data.*`` files
    (default all four); ``data_dir`` replaces ``/usr/share/wordnet``.
    """
    name = "wordnet-supersense"
    if max_len < 1 or min_count < 1 or max_vocab < 3:
        raise SpecError(f"{name}: need max_len >= 1, min_count >= 1, max_vocab >= 3")
    pos = _name_list(pos) if pos is not None else list(WORDNET_POS)
    bad = [p for p in pos if p not in WORDNET_POS]
    if bad or not pos or len(set(pos)) != len(pos):
        raise SpecError(f"{name}: pos must be distinct names among {', '.join(WORDNET_POS)}, got {pos}")
    if not 2 <= classes <= len(LEXNAMES):
        raise SpecError(f"{name}: classes must lie in [2, {len(LEXNAMES)}], got {classes}")
    _, n_test = _check_split_options(name, per_class, test_fraction)
    root = Path(data_dir).expanduser() if data_dir else WORDNET_DIR

    words = re.compile(WORD_PATTERN)
    labels_of: dict[str, set[int]] = {}
    text_of: dict[str, str] = {}
    for lex, definition in read_wordnet(root, pos):
        key = " ".join(words.findall(definition.lower()))
        if key:
            labels_of.setdefault(key, set()).add(lex)
            text_of.setdefault(key, definition)
    per_lex: dict[int, list[str]] = {}
    for key, labs in labels_of.items():
        if len(labs) == 1:
            per_lex.setdefault(next(iter(labs)), []).append(text_of[key])
    if len(per_lex) < classes:
        raise InputError(
            f"{name}: {root} has definitions of only {len(per_lex)} lexicographer files; classes={classes}"
        )
    chosen = sorted(sorted(per_lex, key=lambda k: (-len(per_lex[k]), k))[:classes])
    short = {LEXNAMES[k]: len(per_lex[k]) for k in chosen if len(per_lex[k]) < per_class}
    if short:
        raise InputError(
            f"{name}: too few distinct definitions for per_class={per_class}: "
            + ", ".join(f"{k} has {v}" for k, v in short.items())
        )
    names = [LEXNAMES[k] for k in chosen]
    picked = []
    for k, cname in zip(chosen, names, strict=True):
        pool = per_lex[k]
        picked.append([pool[i] for i in _class_rng(seed, cname).choice(len(pool), per_class, replace=False)])
    train, y_train, test, y_test = _balanced_split(picked, n_test, seed)
    return TextSplits(
        train,
        y_train,
        test,
        y_test,
        classes=names,
        source=f"WordNet 3.0 definitions in {root} (data.{', data.'.join(pos)})",
        tokenizer=WordTokenizer(max_len=max_len).fit(train, min_count=min_count, max_vocab=max_vocab),
        extra={"lexfile_ids": chosen, "synsets_available": {LEXNAMES[k]: len(per_lex[k]) for k in chosen}},
    )


wordnet_supersense = DATASETS.register("wordnet-supersense")(
    _text_dataset("wordnet-supersense", wordnet_supersense_texts)
)
