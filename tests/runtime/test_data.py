"""Dataset, batching, splits, file loading and `validate`'s messages."""

from __future__ import annotations

import numpy as np
import pytest
from dslc.runtime.data import (
    Dataset,
    InputSpec,
    input_specs,
    load_dataset,
    parse_spec,
    validate,
)

from dslc.errors import ConfigError, DataError
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType

N, B, T = Dim.sym("N"), Dim.sym("B"), Dim.sym("T")


def classifier(x_shape=(N, 64), classes=10, x_dtype="f32", y_dtype="i64") -> Graph:
    """x -> logits [N, classes]; y picks its logit with take_along, as cross-entropy does."""
    g = Graph()
    x = g.add("input", (), TensorType(x_shape, x_dtype), {"name": "x", "role": "input"})
    y = g.add("input", (), TensorType((N,), y_dtype), {"name": "y", "role": "label"})
    g.inputs.update(x=x, y=y)
    logits = g.add("param", (), TensorType((N, classes), "f32"), {"name": "logits"})
    logp = g.add("log_softmax", (logits,), TensorType((N, classes), "f32"), {"axis": -1})
    g.add("take_along", (logp, y), TensorType((N,), "f32"), {"axis": -1})
    return g


def language_model(vocab=65, seq=T) -> Graph:
    """tokens [B, T] -> gather(embedding) ...; targets reshaped to [B*T] then take_along."""
    g = Graph()
    tok = g.add("input", (), TensorType((B, seq), "i32"), {"name": "tokens", "role": "input"})
    tgt = g.add("input", (), TensorType((B, seq), "i32"), {"name": "targets", "role": "label"})
    g.inputs.update(tokens=tok, targets=tgt)
    table = g.add("param", (), TensorType((vocab, 8), "f32"), {"name": "wte"})
    g.add("gather", (table, tok), TensorType((B, seq, 8), "f32"), {})
    logits = g.add("param", (), TensorType((B * seq, vocab), "f32"), {"name": "logits"})
    flat = g.add("reshape", (tgt,), TensorType((B * seq,), "i32"), {"shape": (B * seq,)})
    g.add("take_along", (logits, flat), TensorType((B * seq,), "f32"), {"axis": 1})
    return g


def small(n=10) -> Dataset:
    return Dataset({"x": np.arange(n * 2, dtype=np.float32).reshape(n, 2), "y": np.arange(n)})


# --- Dataset ---------------------------------------------------------------------------------


def test_len_subset_and_repr():
    ds = small(10)
    assert len(ds) == 10
    sub = ds.subset([3, 1])
    assert sub.arrays["y"].tolist() == [3, 1]
    assert sub.arrays["x"].tolist() == [[6, 7], [2, 3]]
    assert "10 examples" in repr(ds)


def test_arrays_of_different_lengths_are_refused():
    with pytest.raises(DataError) as e:
        Dataset({"x": np.zeros((3, 2)), "y": np.zeros(4)}, {"source": "a.npz"})
    assert e.value.message == (
        "a.npz: arrays differ in their number of examples: `x` has 3, `y` has 4"
    )


def test_split_is_deterministic_and_disjoint():
    ds = small(100)
    tr1, va1 = ds.split(0.2, seed=7)
    tr2, va2 = ds.split(0.2, seed=7)
    assert (len(tr1), len(va1)) == (80, 20)
    assert tr1.arrays["y"].tolist() == tr2.arrays["y"].tolist()
    assert va1.arrays["y"].tolist() == va2.arrays["y"].tolist()
    assert sorted(tr1.arrays["y"].tolist() + va1.arrays["y"].tolist()) == list(range(100))
    _, va3 = ds.split(0.2, seed=8)
    assert va3.arrays["y"].tolist() != va1.arrays["y"].tolist()


def test_split_keeps_one_example_on_each_side_and_checks_fraction():
    tr, va = small(3).split(0.01, seed=0)
    assert (len(tr), len(va)) == (2, 1)
    tr, va = small(3).split(0.0, seed=0)
    assert (len(tr), len(va)) == (3, 0)
    with pytest.raises(ConfigError, match=r"validation fraction must be in \[0, 1\), got 1.5"):
        small(3).split(1.5, seed=0)


def test_batches_cover_every_example_once_in_a_seeded_order():
    ds = small(10)
    batches = list(ds.batches(4, np.random.default_rng(3)))
    assert [len(b["y"]) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b["y"] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for b in batches:  # rows stay together
        assert (b["x"][:, 0] == 2 * b["y"]).all()
    again = np.concatenate([b["y"] for b in ds.batches(4, np.random.default_rng(3))])
    assert again.tolist() == seen.tolist()
    assert seen.tolist() != list(range(10))


def test_batches_unshuffled_drop_last_and_skip():
    ds = small(10)
    plain = [b["y"].tolist() for b in ds.batches(4, shuffle=False)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b["y"].tolist() for b in ds.batches(4, shuffle=False, drop_last=True)] == plain[:2]
    full = [b["y"].tolist() for b in ds.batches(3, 5)]
    assert [b["y"].tolist() for b in ds.batches(3, 5, skip=2)] == full[2:]
    assert ds.num_batches(4) == 3 and ds.num_batches(4, drop_last=True) == 2
    with pytest.raises(ConfigError, match="batch size must be at least 1, got 0"):
        next(ds.batches(0))


# --- what the model expects --------------------------------------------------------------------


def test_input_specs_find_classes_and_embedding_rows():
    specs = {s.name: s for s in input_specs(classifier(classes=7))}
    assert specs["x"].role == "input" and specs["x"].bound is None
    assert (specs["y"].bound, specs["y"].bound_what) == (7, "classes")
    lm = {s.name: s for s in input_specs(language_model(vocab=50))}
    assert (lm["tokens"].bound, lm["tokens"].bound_what) == (50, "rows")
    assert (lm["targets"].bound, lm["targets"].bound_what) == (50, "classes")  # via reshape


def test_parse_spec():
    assert parse_spec("digits") == ("digits", {})
    assert parse_spec("digits:upscale=28,resample=nearest") == (
        "digits",
        {"upscale": 28, "resample": "nearest"},
    )
    assert parse_spec("a.txt:level=word,lower=false,noise=0.5") == (
        "a.txt",
        {"level": "word", "lower": False, "noise": 0.5},
    )
    assert parse_spec("dir:with:colons/file.npz") == ("dir:with:colons/file.npz", {})


# --- validate: every message -----------------------------------------------------------------


def check(arrays, graph=None, source="digits.npz", **kw):
    return validate(Dataset(arrays), graph or classifier(), source, **kw)


def good():
    return {"x": np.zeros((5, 64), np.float32), "y": np.arange(5)}


def test_validate_casts_and_drops_extra_arrays():
    arrays = {**good(), "extra": np.zeros(5)}
    arrays["x"] = arrays["x"].astype(np.float64)
    arrays["y"] = arrays["y"].astype(np.float64)  # integral floats are fine
    out = check(arrays)
    assert set(out.arrays) == {"x", "y"}
    assert out.arrays["x"].dtype == np.float32 and out.arrays["y"].dtype == np.int64
    assert out.meta["source"] == "digits.npz"


def test_validate_wrong_rank():
    with pytest.raises(DataError) as e:
        check({"x": np.zeros((1797, 8, 8), np.float32), "y": np.zeros(1797, np.int64)})
    assert e.value.message == (
        "digits.npz: array `x` has shape [1797, 8, 8] but input `x` expects f32[N, 64]"
    )
    assert e.value.notes == ["the array has 3 dimension(s), the input 2"]


def test_validate_wrong_fixed_dimension():
    with pytest.raises(DataError) as e:
        check({"x": np.zeros((5, 63), np.float32), "y": np.zeros(5, np.int64)})
    assert e.value.message == (
        "digits.npz: array `x` has shape [5, 63] but input `x` expects f32[N, 64]"
    )
    assert e.value.notes == ["dimension 1 is 63, expected 64"]


def test_validate_symbol_bound_consistently_across_arrays():
    g = language_model()
    arrays = {"tokens": np.zeros((4, 16), np.int32), "targets": np.zeros((4, 15), np.int32)}
    with pytest.raises(DataError) as e:
        validate(Dataset(arrays), g, "corpus.npz")
    assert e.value.message == (
        "corpus.npz: array `targets` has shape [4, 15] but label `targets` expects i32[B, T]"
    )
    assert e.value.notes == ["T is 16 in array `tokens`, but 15 here"]


def test_validate_missing_array_lists_what_is_there():
    with pytest.raises(DataError) as e:
        check({"x": np.zeros((5, 64), np.float32), "label": np.zeros(5)})
    assert e.value.message == ("digits.npz: no array named `y` for label `y`, which expects i64[N]")
    assert e.value.notes == ["arrays present: `x`, `label`"]


def test_validate_without_labels_for_prediction():
    out = check({"x": np.zeros((5, 64), np.float32)}, labels=False)
    assert set(out.arrays) == {"x"}


def test_validate_float_data_for_integer_input():
    arrays = good()
    arrays["y"] = np.array([0, 1, 2.5, 3, 4])
    with pytest.raises(DataError) as e:
        check(arrays)
    assert e.value.message == (
        "digits.npz: array `y` has dtype float64 with non-integer value 2.5 (at index [2]) "
        "but label `y` expects i64[N]"
    )


def test_validate_text_dtype():
    arrays = good()
    arrays["y"] = np.array(["a"] * 5)
    with pytest.raises(DataError) as e:
        check(arrays)
    assert e.value.message == (
        "digits.npz: array `y` has dtype <U1, not numbers, but label `y` expects i64[N]"
    )


def test_validate_label_out_of_range():
    arrays = good()
    arrays["y"] = np.array([0, 1, 10, 3, 4])
    with pytest.raises(DataError) as e:
        check(arrays)
    assert e.value.message == (
        "digits.npz: array `y` holds class index 10 (at index [2]) but label `y` has 10 "
        "classes; values must be in 0..9"
    )


def test_validate_negative_label():
    arrays = good()
    arrays["y"] = np.array([0, -1, 2, 3, 4])
    with pytest.raises(DataError) as e:
        check(arrays)
    assert e.value.message == (
        "digits.npz: array `y` holds negative class index -1 (at index [1]) but label `y` "
        "has 10 classes; values must be in 0..9"
    )


def test_validate_token_beyond_embedding():
    arrays = {"tokens": np.zeros((2, 4), np.int64), "targets": np.zeros((2, 4), np.int64)}
    arrays["tokens"][1, 3] = 65
    with pytest.raises(DataError) as e:
        validate(Dataset(arrays), language_model(), "corpus.npz")
    assert e.value.message == (
        "corpus.npz: array `tokens` holds id 65 (at index [1, 3]) but input `tokens` has an "
        "embedding table of 65 rows; values must be in 0..64"
    )


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_validate_nan_and_inf(bad, word):
    arrays = good()
    arrays["x"][3, 5] = bad
    with pytest.raises(DataError) as e:
        check(arrays)
    assert e.value.message == (
        f"digits.npz: array `x` contains {word} at index [3, 5]; input `x` expects "
        "f32[N, 64] with finite values"
    )


def test_validate_empty_dataset():
    with pytest.raises(DataError) as e:
        check({"x": np.zeros((0, 64), np.float32), "y": np.zeros(0, np.int64)})
    assert e.value.message == "digits.npz: the dataset is empty (0 examples)"


def test_validate_bool_input_and_int32_overflow():
    g = Graph()
    m = g.add("input", (), TensorType((N, 3), "bool"), {"name": "m", "role": "input"})
    g.inputs["m"] = m
    assert validate(Dataset({"m": np.eye(3)}), g, "m.npz").arrays["m"].dtype == np.bool_
    with pytest.raises(DataError, match="holds values other than 0 and 1 but input `m`"):
        validate(Dataset({"m": 2 * np.eye(3)}), g, "m.npz")
    specs = [InputSpec("i", "input", TensorType((N,), "i32"))]
    with pytest.raises(DataError, match=r"m.npz: array `i` holds values outside the range of i32"):
        validate(Dataset({"i": np.array([2**40])}), specs, "m.npz")


# --- files -----------------------------------------------------------------------------------


def test_load_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((6, 64)), y=np.arange(6) % 10, other=np.zeros(6))
    ds = load_dataset(str(path), classifier())
    assert ds.arrays["x"].dtype == np.float32 and ds.arrays["x"].shape == (6, 64)
    assert set(ds.arrays) == {"x", "y"}


def test_load_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.arange(2))
    with pytest.raises(DataError) as e:
        load_dataset(str(path), classifier())
    assert e.value.message == (
        f"{path}: array `x` holds Python objects; dslc loads only numeric arrays (no pickle)"
    )


def test_load_npz_corrupt_and_missing(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"bad.npz: not a readable .npz archive"):
        load_dataset(str(path), classifier())
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "none.npz"), classifier(), source_hint="--data")
    assert e.value.message == f"{tmp_path / 'none.npz'}: no such data file (named by --data)"


def test_unknown_dataset_names_the_builtins():
    with pytest.raises(DataError) as e:
        load_dataset("mnist", classifier())
    assert e.value.message == (
        "unknown dataset `mnist`: not a built-in dataset and not a .npz, .csv or .txt file"
    )
    assert e.value.hint == "built-in datasets: digits, regression, sentiment, tiny_text"


def test_no_dataset_at_all():
    with pytest.raises(ConfigError, match="no dataset given: pass --data"):
        load_dataset(None, classifier())


def write(path, text):
    path.write_text(text)
    return str(path)


def test_csv_indexed_columns_and_named_label(tmp_path):
    g = classifier(x_shape=(N, 1, 2, 2), classes=3)
    path = write(tmp_path / "d.csv", "x0,x1,x2,x3,y\n1,2,3,4,0\n5,6,7,8,2\n")
    ds = load_dataset(path, g)
    assert ds.arrays["x"].shape == (2, 1, 2, 2)
    assert ds.arrays["x"][1, 0].tolist() == [[5, 6], [7, 8]]
    assert ds.arrays["y"].tolist() == [0, 2]


def test_csv_index_order_bracket_names_and_label_alias(tmp_path):
    g = classifier(x_shape=(N, 3), classes=3)
    path = write(tmp_path / "d.csv", "label,x[2],x[0],x[1]\n1,30,10,20\n")
    ds = load_dataset(path, g)
    assert ds.arrays["x"].tolist() == [[10, 20, 30]]
    assert ds.arrays["y"].tolist() == [1]


def test_csv_remaining_columns_feed_the_single_input(tmp_path):
    g = classifier(x_shape=(N, 2), classes=2)
    path = write(tmp_path / "d.csv", "height,weight,y\n1.5,60,1\n1.8,80,0\n")
    ds = load_dataset(path, g)
    np.testing.assert_allclose(ds.arrays["x"], [[1.5, 60], [1.8, 80]])


def test_csv_errors(tmp_path):
    g = classifier(x_shape=(N, 2), classes=2)
    path = write(tmp_path / "a.csv", "x0,x1,y\n1,2,0\n\n3,oops,1\n")
    with pytest.raises(DataError) as e:
        load_dataset(path, g)
    assert e.value.message == f"{path}:4: column `x1` holds 'oops', which is not a number"
    path = write(tmp_path / "b.csv", "x0,x1,y\n1,2\n")
    with pytest.raises(DataError) as e:
        load_dataset(path, g)
    assert e.value.message == f"{path}:2: row has 2 fields but the header has 3"
    path = write(tmp_path / "c.csv", "1,2,0\n3,4,1\n")
    with pytest.raises(DataError) as e:
        load_dataset(path, g)
    assert e.value.message == (
        f"{path}: the first row holds numbers, not column names; dslc needs a header row"
    )
    path = write(tmp_path / "d.csv", "")
    with pytest.raises(DataError, match="the file is empty"):
        load_dataset(path, g)
    path = write(tmp_path / "e.csv", "a,b,c\n1,2,3\n")  # no label column: validate says so
    with pytest.raises(DataError, match=r"no array named `y` for label `y`"):
        load_dataset(path, g)
    path = write(tmp_path / "f.csv", "x0,x1,y\n1,2,0\n")
    with pytest.raises(ConfigError, match=r"\.csv files take no arguments, got seq"):
        load_dataset(path + ":seq=3", g)


def test_txt_file_windows_for_a_language_model(tmp_path):
    path = write(tmp_path / "t.txt", "abcabcabcabc")
    ds = load_dataset(path + ":seq=4,stride=2", language_model(vocab=5))
    vocab = ds.meta["vocab"]
    assert vocab.tokens == ["a", "b", "c"] and ds.meta["seq"] == 4
    assert ds.arrays["tokens"].dtype == np.int32
    assert vocab.decode(ds.arrays["tokens"][1]) == "cabc"
    assert vocab.decode(ds.arrays["targets"][1]) == "abca"
    assert len(ds) == 4  # starts 0, 2, 4, 6 (the last window needs one more token)


def test_txt_encoded_with_a_given_vocabulary_and_bad_bytes(tmp_path):
    from dslc.runtime.text import Vocab

    path = write(tmp_path / "t.txt", "abcabcabc")
    ds = load_dataset(path + ":seq=2", language_model(), vocab=Vocab.build("cba!"))
    assert ds.meta["vocab"].tokens == ["!", "a", "b", "c"]
    assert ds.arrays["tokens"][0].tolist() == [1, 2]
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"ab\xffcd")
    with pytest.raises(DataError) as e:
        load_dataset(str(bad) + ":seq=2", language_model())
    assert e.value.message == f"{bad}: not UTF-8 text (invalid start byte at byte 2)"


def test_txt_needs_a_window_length(tmp_path):
    path = write(tmp_path / "t.txt", "abcabc")
    with pytest.raises(DataError) as e:
        load_dataset(path, language_model())
    assert e.value.message == f"{path}: input `tokens` expects i32[B, T], and nothing fixes T"
    assert e.value.hint == "give the window length as an argument, e.g. `--data corpus.txt:seq=64`"


def test_txt_for_a_model_without_token_input(tmp_path):
    path = write(tmp_path / "t.txt", "abcabc")
    with pytest.raises(DataError) as e:
        load_dataset(path, classifier())
    assert e.value.message == (
        f"{path}: text feeds a language model with one integer input [B, T]; "
        "this model has input `x`: f32[N, 64]"
    )


def test_default_dataset_and_its_arguments_come_from_the_train_section():
    class Train:
        dataset = "digits"
        dataset_args = {"upscale": 4}

    class Program:
        train_graph = classifier(x_shape=(N, 1, Dim.sym("H"), Dim.sym("W")))
        train = Train()
        hparams = {}

    ds = load_dataset(None, Program())
    assert ds.arrays["x"].shape == (1797, 1, 4, 4)
    assert load_dataset("digits:upscale=6", Program()).arrays["x"].shape == (1797, 1, 6, 6)
