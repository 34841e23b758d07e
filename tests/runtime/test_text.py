"""Vocabularies and next-token windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dslc.runtime.text import UNK, Vocab, tokenize_words, windows

from dslc.errors import DataError


def test_char_vocab_is_the_sorted_characters():
    v = Vocab.build("hello world")
    assert v.tokens == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert v.unk is None and v.level == "char" and len(v) == 8
    ids = v.encode("hello")
    assert ids.tolist() == [3, 2, 4, 4, 5] and ids.dtype == np.int64
    assert v.decode(ids) == "hello"
    assert v.decode(v.encode("hello world")) == "hello world"


def test_char_vocab_handles_non_ascii():
    v = Vocab.build("naïve café ☕")
    assert v.decode(v.encode("café ☕")) == "café ☕"


def test_unknown_characters():
    v = Vocab.build("abc")
    with pytest.raises(DataError) as e:
        v.encode("abz")
    assert e.value.message == "'z' is not in the char vocabulary (3 tokens)"
    assert v.encode("azbz", errors="skip").tolist() == [0, 1]
    with_unk = Vocab([UNK, "a", "b"], "char", UNK)
    assert with_unk.encode("abz").tolist() == [1, 2, 0]
    with pytest.raises(DataError, match="'z' is not in the char vocabulary"):
        with_unk.encode("z", errors="strict")
    with pytest.raises(DataError, match="unknown `errors` mode `loose`"):
        v.encode("a", errors="loose")


def test_word_tokens_keep_punctuation_apostrophes_and_newlines():
    assert tokenize_words("Jack and Jill's pail,\nfell down!") == [
        "Jack", "and", "Jill's", "pail", ",", "\n", "fell", "down", "!",
    ]  # fmt: skip


def test_word_vocab_by_frequency_with_unknown_and_cap():
    text = "the cat and the dog and the bird"
    v = Vocab.build(text, "word")
    assert v.tokens == [UNK, "the", "and", "bird", "cat", "dog"]  # ties in alphabetical order
    assert v.lower
    capped = Vocab.build(text, "word", max_size=3)
    assert capped.tokens == [UNK, "the", "and"]
    assert capped.encode("The cat and the fish").tolist() == [1, 0, 2, 1, 0]
    assert Vocab.build(text, "word", min_freq=2).tokens == [UNK, "the", "and"]


def test_word_decode_joins_with_spaces_and_tight_punctuation():
    v = Vocab.build("jack fell down , and jill came tumbling after .\n( yes )", "word")
    ids = v.encode("Jack fell down, and Jill came tumbling after.\n(yes)")
    assert v.decode(ids) == "jack fell down, and jill came tumbling after.\n(yes)"


def test_json_round_trip_without_pickle():
    for v in (Vocab.build("abc\n é"), Vocab.build("a b b", "word", max_size=5)):
        s = v.to_json()
        assert isinstance(s, str) and json.loads(s)["tokens"] == v.tokens
        back = Vocab.from_json(s)
        assert back == v and back.tokens == v.tokens and back.unk == v.unk
        assert back.encode("ab").tolist() == v.encode("ab").tolist()


@pytest.mark.parametrize(
    "text",
    ['{"level": "char"}', "not json", '{"tokens": [1, 2]}', '{"tokens": ["a", "a"]}', "[]"],
)
def test_bad_vocab_json(text):
    with pytest.raises(DataError, match="vocabulary"):
        Vocab.from_json(text)


def test_bad_level():
    with pytest.raises(DataError, match="vocabulary level must be `char` or `word`, got `byte`"):
        Vocab.build("abc", "byte")


def test_windows_with_next_token_targets():
    ids = np.arange(10)
    x, y = windows(ids, 4, stride=3)
    assert x.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert y.tolist() == [[1, 2, 3, 4], [4, 5, 6, 7]]
    assert x.flags.c_contiguous and y.flags.c_contiguous
    x, y = windows(ids, 4, stride=1, next_only=True)
    assert len(x) == 6 and x[-1].tolist() == [5, 6, 7, 8] and y.tolist() == [4, 5, 6, 7, 8, 9]
    with pytest.raises(DataError, match="the text has 4 tokens; windows of 4 need 5"):
        windows(np.arange(4), 4)
