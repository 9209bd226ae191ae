"""Language datasets: word → language (Debian word lists) and WordNet gloss → supersense.

Most tests run on tiny fixture files written in tmp_path; the last ones load the real Debian
files when they are installed (skipped otherwise).
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from kdaudit.data.base import load_dataset
from kdaudit.data.text import (
    LEXNAMES,
    CharTokenizer,
    WordTokenizer,
    parse_synset_line,
    read_word_list,
    tokenizer_from_dict,
    word_language_texts,
    wordnet_supersense_texts,
)
from kdaudit.errors import InputError, SpecError

# ----------------------------------------------------------------------------- fixtures

WORD_FILES = {
    "american-english": [
        "Aaron",
        "London",  # capitalised names: dropped
        "apple",
        "bread",
        "cheese",
        "window",
        "garden",
        "dog's",  # possessive: dropped
        "table",  # also French: dropped
        "hand",  # German has "Hand": dropped
        "ox",  # shorter than min_len=3
        "strawberry",  # longer than max_len=8
        "well-known",
        "mp3",
        "e.g.",  # not letters only
        "apple",  # a repeat counts once
    ],
    "french": [
        "Paris",
        "table",
        "aujourd'hui",
        "à",
        "tomate",
        "anticonstitutionnel",
        "cafe\u0301",  # NFD in the file: read as "café"
        "château",
        "fenêtre",
        "pain",
        "fromage",
    ],
    "ngerman": [
        "Hand",
        "Haus",
        "Tomate",
        "Donaudampfschiff",
        "straße",
        "über",
        "schön",
        "gehen",
        "laufen",
    ],
}
EXPECTED = {
    "english": {"apple", "bread", "cheese", "window", "garden"},
    "french": {"café", "château", "fenêtre", "pain", "fromage"},
    "german": {"straße", "über", "schön", "gehen", "laufen"},
}
LANGS = list(EXPECTED)
SMALL = dict(languages=LANGS, per_class=5, test_fraction=0.4, min_len=3, max_len=8)


@pytest.fixture
def dict_dir(tmp_path: Path) -> Path:
    d = tmp_path / "dict"
    d.mkdir()
    for name, words in WORD_FILES.items():
        (d / name).write_text("\n".join(words) + "\n", encoding="utf-8")
    return d


def wn_line(offset: int, lex: int, ss: str, words: list[str], gloss: str) -> str:
    """One line in the format of WordNet's data.* files (one hypernym pointer)."""
    ws = " ".join(f"{w} 0" for w in words)
    return f"{offset:08d} {lex:02d} {ss} {len(words):02x} {ws} 001 @ 00001740 {ss} 0000 | {gloss}  "


HEADER = [
    "  1 This software and database is being provided to you, the LICENSEE, by  ",
    "  2 Princeton University under the following license.  By obtaining, using  ",
    "  3 and/or copying this software and database, you agree that you have  ",
]
SHARED_GLOSS = "move the body in a rhythmic way"
# lex file → definitions as written (a quoted example follows some of them)
WN_NOUN = {
    3: [
        "that which is perceived to exist",
        "a general concept of things",
        "the most abstract kind of entity",
        "a category of being",
    ],
    5: [
        "a small furry mammal with whiskers",
        "a large striped cat of asia",
        'a bird that cannot fly; "penguins swim"',
        "a fish with sharp teeth",
        "an insect that hums",
        SHARED_GLOSS,
    ],
    18: [
        "a person who bakes bread",
        "a woman who sings opera",
        "a child who plays chess",
        "a man who repairs shoes",
        "someone who writes novels",
        "a person who bakes bread",
    ],
}
WN_VERB = {
    29: ["breathe in deeply", "cough loudly and often", "sneeze with force", "yawn when tired", SHARED_GLOSS],
    30: ["become larger or greater", "turn into ice", "make something softer"],
}
WN_EXPECTED = {
    "noun.Tops": set(WN_NOUN[3]),
    "noun.animal": {g.split('; "')[0] for g in WN_NOUN[5]} - {SHARED_GLOSS},
    "noun.person": set(WN_NOUN[18]),
}
WN_SMALL = dict(classes=3, per_class=4, test_fraction=0.25, pos=["noun", "verb"])


@pytest.fixture
def wn_dir(tmp_path: Path) -> Path:
    d = tmp_path / "wordnet"
    d.mkdir()
    for pos, ss, table in (("noun", "n", WN_NOUN), ("verb", "v", WN_VERB)):
        lines = list(HEADER)
        offset = 100
        for lex, glosses in table.items():
            for i, g in enumerate(glosses):
                lines.append(wn_line(offset, lex, ss, [f"w{lex}_{i}"], g))
                offset += 137
        (d / f"data.{pos}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def plain_vocab(tokens_per_text: list[list[str]], min_count: int = 1, max_vocab: int | None = None) -> list[str]:
    counts: dict[str, int] = {}
    for toks in tokens_per_text:
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
    kept = sorted((t for t in counts if counts[t] >= min_count), key=lambda t: (-counts[t], t))
    if max_vocab is not None:
        kept = kept[: max_vocab - 2]
    return ["<pad>", "<unk>"] + kept


def plain_encode(tokens_per_text: list[list[str]], vocab: list[str], max_len: int) -> np.ndarray:
    out = np.zeros((len(tokens_per_text), max_len), dtype=np.int64)
    for r, toks in enumerate(tokens_per_text):
        for c, t in enumerate(toks[:max_len]):
            out[r, c] = vocab.index(t) if t in vocab else 1
    return out


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


# ----------------------------------------------------------------------------- tokenizers


def test_char_tokenizer_gives_the_expected_ids():
    tok = CharTokenizer(max_len=5).fit(["abca", "bd"])
    # counts a:2 b:2 c:1 d:1 → by frequency, then by character
    assert tok.vocab == ["<pad>", "<unk>", "a", "b", "c", "d"]
    ids = tok.encode(["cab", "cabx", "abcdabcd", "CAB", ""])
    assert ids.dtype == np.int64 and ids.shape == (5, 5)
    assert ids.tolist() == [
        [4, 2, 3, 0, 0],
        [4, 2, 3, 1, 0],  # x is unknown
        [2, 3, 4, 5, 2],  # truncated to max_len
        [4, 2, 3, 0, 0],  # lowercased
        [0, 0, 0, 0, 0],
    ]
    words = ["straße", "über", "cafe\u0301", "zzz"]
    assert np.array_equal(
        tok.encode(words), plain_encode([list(unicodedata.normalize("NFC", w)) for w in words], tok.vocab, 5)
    )


def test_word_tokenizer_split_min_count_and_max_vocab():
    tok = WordTokenizer(max_len=3)
    assert tok.split("The dog's bone, 2 times!") == ["the", "dog", "s", "bone", "2", "times"]
    texts = ["a b b c c c d", "c d"]
    tok.fit(texts, min_count=2)
    assert tok.vocab == ["<pad>", "<unk>", "c", "b", "d"]  # c:4, b:2, d:2; a:1 dropped
    assert tok.encode(["d c a b"]).tolist() == [[4, 2, 1]]
    assert WordTokenizer(max_len=3).fit(texts, max_vocab=4).vocab == ["<pad>", "<unk>", "c", "b"]
    with pytest.raises(SpecError, match="max_vocab"):
        WordTokenizer(max_len=3).fit(texts, max_vocab=2)


def test_tokenizers_round_trip_through_a_saved_dict():
    texts = ["Smörgåsbord", "über", "CAFÉ au lait", "x-ray"]
    for tok in (CharTokenizer(max_len=7).fit(texts), WordTokenizer(max_len=3, pattern=r"[a-zé]+").fit(texts)):
        saved = json.loads(json.dumps(tok.to_dict()))
        back = tokenizer_from_dict(saved)
        assert type(back) is type(tok) and back.vocab == tok.vocab and back.to_dict() == tok.to_dict()
        probe = texts + ["brand new words", "éé"]
        assert np.array_equal(back.encode(probe), tok.encode(probe))
    # the saved pattern is used, not the default one
    assert tokenizer_from_dict(saved).split("café42") == ["café"]


def test_tokenizer_dicts_are_validated():
    with pytest.raises(InputError, match="kind"):
        tokenizer_from_dict({"kind": "bpe", "max_len": 4, "vocab": ["<pad>", "<unk>"]})
    with pytest.raises(InputError, match="must start with"):
        tokenizer_from_dict({"kind": "char", "max_len": 4, "lowercase": True, "vocab": ["a", "<pad>", "<unk>"]})
    with pytest.raises(InputError, match="duplicate"):
        tokenizer_from_dict({"kind": "char", "max_len": 4, "lowercase": True, "vocab": ["<pad>", "<unk>", "a", "a"]})
    with pytest.raises(InputError, match="expected 'word'"):
        WordTokenizer.from_dict(CharTokenizer(max_len=2).fit(["ab"]).to_dict())
    with pytest.raises(InputError, match="fit it"):
        CharTokenizer(max_len=2).encode(["ab"])


# ----------------------------------------------------------------------------- word-language


def test_word_language_keeps_exactly_the_unambiguous_words(dict_dir):
    s = word_language_texts(**SMALL, data_dir=str(dict_dir))
    assert s.classes == LANGS
    for c, lang in enumerate(LANGS):
        tr = [w for w, y in zip(s.train, s.y_train) if y == c]
        te = [w for w, y in zip(s.test, s.y_test) if y == c]
        assert (len(tr), len(te)) == (3, 2)
        assert set(tr) | set(te) == EXPECTED[lang]  # per_class = all 5 eligible words
    assert not set(s.train) & set(s.test)


def test_word_language_bundle_matches_a_plain_loop_encoding(dict_dir):
    b = load_dataset("word-language", **SMALL, data_dir=str(dict_dir))
    s = word_language_texts(**SMALL, data_dir=str(dict_dir))
    vocab = plain_vocab([list(w) for w in s.train])  # from the train split only
    assert b.info["vocab"] == vocab
    assert b.x_train.dtype == torch.int64 and b.x_test.dtype == torch.int64
    assert tuple(b.x_train.shape) == (9, 8) and tuple(b.x_test.shape) == (6, 8)
    assert np.array_equal(b.x_train.numpy(), plain_encode([list(w) for w in s.train], vocab, 8))
    assert np.array_equal(b.x_test.numpy(), plain_encode([list(w) for w in s.test], vocab, 8))
    assert np.array_equal(b.y_train.numpy(), s.y_train) and np.array_equal(b.y_test.numpy(), s.y_test)
    # padded with 0 after the word, nothing before
    lengths = (b.x_test != 0).sum(1).tolist()
    assert lengths == [len(w) for w in s.test]
    assert all((row[:n] != 0).all() and (row[n:] == 0).all() for row, n in zip(b.x_test, lengths))
    # letters seen only in test words are <unk> there
    unseen = Counter(ch for w in s.test for ch in w if ch not in set("".join(s.train)))
    assert sum(unseen.values()) > 0
    assert int((b.x_test == 1).sum()) == sum(unseen.values())
    assert np.bincount(b.y_train.numpy()).tolist() == [3, 3, 3]
    assert np.bincount(b.y_test.numpy()).tolist() == [2, 2, 2]
    assert b.info["classes"] == LANGS and b.info["modality"] == "text"
    assert b.info["model_args"] == {"vocab_size": len(vocab), "pad_id": 0}
    assert b.model_args() == {"vocab_size": len(vocab), "pad_id": 0}
    assert b.info["tokenizer"] == {"kind": "char", "max_len": 8, "lowercase": True}
    assert "normalization" not in b.info
    # the saved vocabulary reproduces the encoding
    tok = tokenizer_from_dict({**b.info["tokenizer"], "vocab": b.info["vocab"]})
    assert np.array_equal(tok.encode(s.test), b.x_test.numpy())


def test_word_language_is_deterministic_and_follows_the_seed(dict_dir):
    opts = {**SMALL, "per_class": 4, "test_fraction": 0.5}
    a = load_dataset("word-language", **opts, data_dir=str(dict_dir))
    b = load_dataset("word-language", **opts, data_dir=str(dict_dir))
    assert a.fingerprint() == b.fingerprint() and a.info["vocab"] == b.info["vocab"]
    assert all(
        torch.equal(x, y)
        for x, y in zip((a.x_train, a.y_train, a.x_test, a.y_test), (b.x_train, b.y_train, b.x_test, b.y_test))
    )
    fps = {load_dataset("word-language", **opts, seed=s, data_dir=str(dict_dir)).fingerprint() for s in (1, 2)}
    assert a.fingerprint() not in fps
    sub = load_dataset("word-language", **opts, train_subset=3, data_dir=str(dict_dir))
    assert len(sub.x_train) == 3 and sorted(sub.y_train.tolist()) == [0, 1, 2]


def test_word_language_too_few_words_says_how_many(dict_dir):
    with pytest.raises(InputError, match=r"english .* has only 5 eligible words"):
        load_dataset("word-language", **{**SMALL, "per_class": 6}, data_dir=str(dict_dir))


def test_word_language_missing_list_names_the_package(dict_dir, tmp_path):
    with pytest.raises(InputError, match=r"apt-get install witalian"):
        load_dataset("word-language", languages=["english", "italian"], data_dir=str(dict_dir))
    with pytest.raises(InputError, match=r"apt-get install wamerican"):
        load_dataset("word-language", data_dir=str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "opts, msg",
    [
        ({"languages": ["english", "klingon"]}, "unknown language"),
        ({"languages": ["english"]}, "at least 2"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"per_class": 1}, "empty split"),
        ({"min_len": 5, "max_len": 4}, "min_len"),
    ],
)
def test_word_language_bad_options(dict_dir, opts, msg):
    with pytest.raises(SpecError, match=msg):
        load_dataset("word-language", **{**SMALL, **opts}, data_dir=str(dict_dir))


def test_word_lists_in_latin1_are_read_and_binary_files_rejected(dict_dir):
    words = ["smörgås", "älg", "hus", "björn", "kanel", "Stockholm"]
    (dict_dir / "swedish").write_bytes("\n".join(words).encode("iso-8859-1"))
    text, enc = read_word_list(dict_dir / "swedish", "wswedish")
    assert enc == "iso-8859-1" and text.split() == words
    s = word_language_texts(**{**SMALL, "languages": ["swedish", *LANGS]}, data_dir=str(dict_dir))
    assert s.extra["encodings"] == {"swedish": "iso-8859-1", "english": "utf-8", "french": "utf-8", "german": "utf-8"}
    assert {w for w, y in zip(s.train + s.test, [*s.y_train, *s.y_test]) if y == 0} == {
        "smörgås",
        "älg",
        "hus",
        "björn",
        "kanel",
    }
    (dict_dir / "danish").write_bytes(b"hus\x00\x01\x02\x9b\x85")
    with pytest.raises(InputError, match="not UTF-8 or ISO-8859-1"):
        load_dataset("word-language", languages=["danish", "english"], data_dir=str(dict_dir))


# ----------------------------------------------------------------------------- wordnet-supersense


def test_parse_synset_line_of_the_real_format():
    line = (
        "00001740 00 a 01 able 0 005 = 05200169 n 0000 = 05616246 n 0000 + 05616246 n 0101 "
        "+ 05200169 n 0101 ! 00002098 a 0101 | (usually followed by `to') having the necessary "
        'means or skill or know-how or authority to do something; "able to swim"; "she was able '
        'to program her computer"  '
    )
    assert parse_synset_line(line) == (
        0,
        "(usually followed by `to') having the necessary means or skill or know-how or authority to do something",
    )
    verb = (
        "00002325 29 v 01 respire 1 005 $ 00001740 v 0000 @ 02108395 v 0000 + 03110323 a 0101 "
        "+ 00831191 n 0103 + 00830811 n 0101 01 + 02 00 | undergo the biomedical and metabolic "
        "processes of respiration by taking up oxygen and producing carbon monoxide  "
    )
    lex, gloss = parse_synset_line(verb)
    assert LEXNAMES[lex] == "verb.body" and gloss.endswith("producing carbon monoxide")
    assert parse_synset_line(HEADER[0]) is None and parse_synset_line("") is None
    with pytest.raises(ValueError):
        parse_synset_line("garbage without a gloss")
    with pytest.raises(ValueError, match="lex_filenum 45"):
        parse_synset_line("00001740 45 n 01 thing 0 000 | a thing")
    assert len(LEXNAMES) == 45 and LEXNAMES[18] == "noun.person" and LEXNAMES[44] == "adj.ppl"


def test_wordnet_picks_largest_classes_and_drops_ambiguous_definitions(wn_dir):
    s = wordnet_supersense_texts(**WN_SMALL, data_dir=str(wn_dir))
    # sizes after deduplication: animal 5, person 5, Tops 4, verb.body 4 (tie: lower id wins), verb.change 3
    assert s.classes == ["noun.Tops", "noun.animal", "noun.person"]
    assert s.extra["lexfile_ids"] == [3, 5, 18]
    for c, name in enumerate(s.classes):
        tr = [g for g, y in zip(s.train, s.y_train) if y == c]
        te = [g for g, y in zip(s.test, s.y_test) if y == c]
        assert (len(tr), len(te)) == (3, 1)
        assert set(tr + te) <= WN_EXPECTED[name] and len(set(tr + te)) == 4
    assert SHARED_GLOSS not in s.train + s.test
    assert not any('"' in g for g in s.train + s.test)  # examples cut off
    assert not set(s.train) & set(s.test)


def test_wordnet_bundle_vocab_from_train_only(wn_dir):
    opts = dict(**WN_SMALL, max_len=5, min_count=1, data_dir=str(wn_dir))
    b = load_dataset("wordnet-supersense", **opts)
    s = wordnet_supersense_texts(**WN_SMALL, data_dir=str(wn_dir))
    vocab = plain_vocab([words_of(g) for g in s.train])
    assert b.info["vocab"] == vocab
    assert np.array_equal(b.x_train.numpy(), plain_encode([words_of(g) for g in s.train], vocab, 5))
    assert np.array_equal(b.x_test.numpy(), plain_encode([words_of(g) for g in s.test], vocab, 5))
    assert (b.x_test == 1).any()  # words only in test definitions are <unk>
    assert b.x_train.dtype == torch.int64 and tuple(b.x_train.shape) == (9, 5)
    assert b.info["tokenizer"]["kind"] == "word" and b.info["model_args"]["vocab_size"] == len(vocab)
    assert b.info["classes"] == ["noun.Tops", "noun.animal", "noun.person"]
    again = load_dataset("wordnet-supersense", **opts)
    assert again.fingerprint() == b.fingerprint()
    assert load_dataset("wordnet-supersense", **{**opts, "seed": 1}).fingerprint() != b.fingerprint()
    # min_count and max_vocab shrink the train vocabulary
    b2 = load_dataset("wordnet-supersense", **{**opts, "min_count": 2, "max_vocab": 6})
    assert b2.info["vocab"] == plain_vocab([words_of(g) for g in s.train], min_count=2, max_vocab=6)


def test_wordnet_errors(wn_dir):
    with pytest.raises(InputError, match="noun.Tops has 4"):
        load_dataset("wordnet-supersense", **{**WN_SMALL, "per_class": 5}, data_dir=str(wn_dir))
    with pytest.raises(InputError, match="only 5 lexicographer files"):
        load_dataset("wordnet-supersense", **{**WN_SMALL, "classes": 6}, data_dir=str(wn_dir))
    with pytest.raises(InputError, match=r"data\.adj not found; install it with `apt-get install wordnet-base`"):
        load_dataset("wordnet-supersense", data_dir=str(wn_dir))
    with pytest.raises(SpecError, match="pos"):
        load_dataset("wordnet-supersense", pos=["noun", "pronoun"], data_dir=str(wn_dir))
    with open(wn_dir / "data.verb", "a", encoding="utf-8") as f:
        f.write("this is not a synset\n")
    n = len((wn_dir / "data.verb").read_text().splitlines())
    with pytest.raises(InputError, match=rf"data\.verb:{n}:"):
        load_dataset("wordnet-supersense", **WN_SMALL, data_dir=str(wn_dir))


# ----------------------------------------------------------------------------- real Debian files

DEBIAN_LISTS = {
    "english": "american-english",
    "french": "french",
    "german": "ngerman",
    "spanish": "spanish",
    "italian": "italian",
    "dutch": "dutch",
    "portuguese": "portuguese",
    "swedish": "swedish",
    "danish": "danish",
}


@pytest.mark.slow
@pytest.mark.skipif(
    not all(Path("/usr/share/dict", f).exists() for f in DEBIAN_LISTS.values()),
    reason="Debian word lists not installed",
)
def test_real_word_language_default():
    t = time.perf_counter()
    b = load_dataset("word-language")
    print(f"\nword-language default load: {time.perf_counter() - t:.2f} s, vocab {len(b.info['vocab'])}")
    assert b.info["classes"] == list(DEBIAN_LISTS)
    assert tuple(b.x_train.shape) == (9 * 2400, 16) and tuple(b.x_test.shape) == (9 * 600, 16)
    assert np.bincount(b.y_train.numpy()).tolist() == [2400] * 9
    assert np.bincount(b.y_test.numpy()).tolist() == [600] * 9
    vocab = b.info["vocab"]
    words = ["".join(vocab[i] for i in row if i) for row in b.x_train.tolist()]
    labels = b.y_train.tolist()
    assert len(set(words)) == len(words)  # distinct, so no word in two classes
    # independently: no train word is in (any case form of) another selected list
    forms = {}
    for lang, f in DEBIAN_LISTS.items():
        raw = Path("/usr/share/dict", f).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        forms[lang] = set(unicodedata.normalize("NFC", text).lower().split())
    langs = list(DEBIAN_LISTS)
    for w, y in zip(words, labels):
        assert w in forms[langs[y]] and w.isalpha() and 3 <= len(w) <= 16
        assert not any(w in forms[o] for o in langs if o != langs[y]), w


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="wordnet-base not installed")
def test_real_wordnet_supersense_default():
    t = time.perf_counter()
    b = load_dataset("wordnet-supersense")
    dt = time.perf_counter() - t
    print(f"\nwordnet-supersense default load: {dt:.2f} s, classes {b.info['classes']}, vocab {len(b.info['vocab'])}")
    assert len(b.info["classes"]) == 8 and set(b.info["classes"]) <= set(LEXNAMES)
    assert np.bincount(b.y_train.numpy()).tolist() == [1200] * 8
    assert np.bincount(b.y_test.numpy()).tolist() == [300] * 8
    assert tuple(b.x_train.shape) == (9600, 24) and b.x_train.dtype == torch.int64
    assert 1000 < len(b.info["vocab"]) <= 8000
