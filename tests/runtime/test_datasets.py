"""The built-in datasets: digits, regression, sentiment, tiny_text."""

from __future__ import annotations

import numpy as np
import pytest
from dslc.runtime.data import InputSpec, load_dataset
from dslc.runtime.datasets import digits_table, resample_matrix, resize_images, tiny_text_corpus

from dslc.errors import ConfigError, DataError
from dslc.ir.dims import Dim
from dslc.ir.types import TensorType

N, B, T, H, W = (Dim.sym(s) for s in "NBTHW")


def image_model(shape, classes=10, label=None):
    label = label or InputSpec("y", "label", TensorType((N,), "i64"), classes, "classes")
    return [InputSpec("x", "input", TensorType(shape, "f32")), label]


# --- digits ----------------------------------------------------------------------------------


def test_digits_table_matches_the_uci_data():
    images, labels = digits_table()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # the first image of load_digits (a zero), row 0: 0 0 5 13 9 1 0 0
    assert (images[0, 0] * 16).tolist() == [0, 0, 5, 13, 9, 1, 0, 0]
    assert labels[:5].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "shape,want",
    [
        ((N, 64), (1797, 64)),
        ((N, 8, 8), (1797, 8, 8)),
        ((N, 1, 8, 8), (1797, 1, 8, 8)),
        ((N, 8, 8, 1), (1797, 8, 8, 1)),
        ((N, 1, 28, 28), (1797, 1, 28, 28)),
        ((N, 784), (1797, 784)),
        ((N, 3, 16, 16), (1797, 3, 16, 16)),
    ],
)
def test_digits_take_the_models_image_shape(shape, want):
    ds = load_dataset("digits", image_model(shape))
    x = ds.arrays["x"]
    assert x.shape == want and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert ds.arrays["y"].shape == (1797,)
    assert ds.meta["classes"] == 10


def test_digits_flat_and_square_agree():
    flat = load_dataset("digits", image_model((N, 64))).arrays["x"]
    nchw = load_dataset("digits", image_model((N, 1, 8, 8))).arrays["x"]
    np.testing.assert_array_equal(flat, nchw.reshape(1797, 64))


def test_digits_upscale_argument_for_symbolic_sizes():
    ds = load_dataset("digits:upscale=28", image_model((N, 1, H, W)))
    assert ds.arrays["x"].shape == (1797, 1, 28, 28)
    assert load_dataset("digits", image_model((N, 1, H, W))).arrays["x"].shape == (1797, 1, 8, 8)
    near = load_dataset("digits:upscale=16,resample=nearest", image_model((N, H, W)))
    np.testing.assert_array_equal(near.arrays["x"][:, ::2, ::2], digits_table()[0])


def test_digits_one_hot_labels_for_float_label():
    label = InputSpec("y", "label", TensorType((N, 10), "f32"))
    ds = load_dataset("digits", image_model((N, 64), label=label))
    y = ds.arrays["y"]
    assert y.shape == (1797, 10) and y.dtype == np.float32
    assert (y.argmax(1) == digits_table()[1]).all() and (y.sum(1) == 1).all()


def test_digits_too_few_classes_in_the_model():
    with pytest.raises(DataError) as e:
        load_dataset("digits", image_model((N, 64), classes=5))
    assert e.value.message == (
        "digits: array `y` holds class index 5 (at index [5]) but label `y` has 5 classes; "
        "values must be in 0..4"
    )


def test_digits_shape_that_is_no_image():
    with pytest.raises(DataError) as e:
        load_dataset("digits", image_model((N, 60)))
    assert e.value.message == (
        "digits: input `x` expects f32[N, 60], but 60 is not the pixel count of a square "
        "image (64 for 8x8, 784 for 28x28)"
    )


def test_digits_bad_arguments():
    with pytest.raises(ConfigError) as e:
        load_dataset("digits:zoom=2", image_model((N, 64)))
    assert e.value.message == "digits: unknown argument `zoom`; known: resample, upscale"
    with pytest.raises(ConfigError, match="resample must be `bilinear` or `nearest`"):
        load_dataset("digits:resample=cubic", image_model((N, 64)))
    with pytest.raises(ConfigError) as e:
        load_dataset("digits:upscale=16", image_model((N, 1, 28, 28)))
    assert e.value.message == "digits: upscale=16 but input `x` expects f32[N, 1, 28, 28]"


def test_bilinear_resampling_by_hand():
    # 2 -> 4 with half-pixel centres: out i samples at (i + 0.5) / 2 - 0.5, clamped
    np.testing.assert_allclose(resample_matrix(2, 4) @ np.array([0.0, 1.0]), [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(resample_matrix(4, 2) @ np.array([0.0, 1, 2, 3]), [0.5, 2.5])
    np.testing.assert_allclose(resample_matrix(3, 3), np.eye(3))


def test_bilinear_resampling_matches_torch():
    torch = pytest.importorskip("torch")
    images = digits_table()[0][:4]
    ours = resize_images(images, 28, 28)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(np.array(images[:, None])), size=(28, 28), mode="bilinear"
    )
    np.testing.assert_allclose(ours, ref.numpy()[:, 0], atol=1e-6)


# --- regression ----------------------------------------------------------------------------


def line_model(d=3, k=2):
    return [
        InputSpec("x", "input", TensorType((N, d), "f32")),
        InputSpec("y", "label", TensorType((N, k), "f32")),
    ]


def test_regression_least_squares_recovers_the_saved_weights():
    ds = load_dataset("regression", line_model())
    x, y = ds.arrays["x"].astype(np.float64), ds.arrays["y"].astype(np.float64)
    assert x.shape == (1000, 3) and y.shape == (1000, 2)
    w_true, b_true = np.array(ds.meta["w_true"]), np.array(ds.meta["b_true"])
    assert w_true.shape == (3, 2) and b_true.shape == (2,)
    assert (np.abs(w_true) >= 0.5).all() and (np.abs(b_true) >= 0.5).all()
    sol = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    np.testing.assert_allclose(sol[:3], w_true, rtol=0.01)
    np.testing.assert_allclose(sol[3], b_true, rtol=0.01)


def test_regression_is_deterministic_and_seeded():
    a = load_dataset("regression", line_model())
    b = load_dataset("regression", line_model())
    np.testing.assert_array_equal(a.arrays["x"], b.arrays["x"])
    c = load_dataset("regression:seed=1,n=50,noise=0", line_model())
    assert len(c) == 50 and c.meta["w_true"] != a.meta["w_true"]
    x, y = c.arrays["x"].astype(np.float64), c.arrays["y"].astype(np.float64)
    np.testing.assert_allclose(x @ c.meta["w_true"] + c.meta["b_true"], y, rtol=1e-5, atol=1e-5)


def test_regression_vector_shapes_and_symbolic_features():
    specs = [
        InputSpec("x", "input", TensorType((N,), "f32")),
        InputSpec("y", "label", TensorType((N,), "f32")),
    ]
    ds = load_dataset("regression", specs)
    assert ds.arrays["x"].shape == (1000,) and ds.arrays["y"].shape == (1000,)
    sym = [
        InputSpec("x", "input", TensorType((N, Dim.sym("D")), "f32")),
        InputSpec("y", "label", TensorType((N, 1), "f32")),
    ]
    assert load_dataset("regression:features=4", sym).arrays["x"].shape == (1000, 4)


# --- sentiment -----------------------------------------------------------------------------


def sentiment_model(seq=100, vocab=10000, classes=2):
    return [
        InputSpec("tokens", "input", TensorType((B, seq), "i32"), vocab, "rows"),
        InputSpec("y", "label", TensorType((B,), "i64"), classes, "classes"),
    ]


def test_sentiment_label_is_the_class_of_its_sentiment_words():
    ds = load_dataset("sentiment", sentiment_model())
    x, y = ds.arrays["tokens"], ds.arrays["y"]
    assert x.shape == (2000, 100) and x.dtype == np.int32
    assert 0 <= x.min() and x.max() < 10000
    assert np.bincount(y).tolist() == [1000, 1000]
    words = np.array(ds.meta["sentiment_words"])
    assert words.shape == (2, 20)
    has = np.stack([np.isin(x, words[c]).any(1) for c in range(2)], 1)
    assert (has.sum(1) == 1).all()  # exactly one class's words in every sequence
    assert (has.argmax(1) == y).all()
    assert (x[:, 0] == 0).any() and (x[:, -1] != 0).all()  # pre-padded


def test_sentiment_follows_the_model_and_arguments():
    ds = load_dataset("sentiment:n=90,words=5,seed=3", sentiment_model(seq=12, vocab=50, classes=3))
    assert ds.arrays["tokens"].shape == (90, 12) and ds.arrays["tokens"].max() < 50
    assert np.bincount(ds.arrays["y"]).tolist() == [30, 30, 30]
    assert np.array(ds.meta["sentiment_words"]).shape == (3, 5)
    again = load_dataset("sentiment:n=90,words=5,seed=3", sentiment_model(12, 50, 3))
    np.testing.assert_array_equal(ds.arrays["tokens"], again.arrays["tokens"])
    sym = sentiment_model(seq=T)
    assert load_dataset("sentiment:n=10,seq=30", sym).arrays["tokens"].shape == (10, 30)


def test_sentiment_vocabulary_too_small():
    with pytest.raises(DataError) as e:
        load_dataset("sentiment", sentiment_model(vocab=4))
    assert e.value.message == (
        "sentiment: a vocabulary of 4 tokens is too small for 2 classes of sentiment words "
        "plus neutral ones"
    )


# --- tiny_text -----------------------------------------------------------------------------


def lm(vocab=65, seq=T, label_shape=(B, T)):
    return [
        InputSpec("tokens", "input", TensorType((B, seq), "i32"), vocab, "rows"),
        InputSpec("targets", "label", TensorType(label_shape, "i32"), vocab, "classes"),
    ]


def test_tiny_text_is_small_ascii_that_fits_a_65_token_model():
    text = tiny_text_corpus()
    assert 5000 < len(text) < 20000 and text.isascii()
    assert len(set(text)) <= 65
    assert "Shall I compare thee to a summer's day?" in text


def test_tiny_text_character_windows():
    ds = load_dataset("tiny_text:seq=32", lm())
    x, y, vocab = ds.arrays["tokens"], ds.arrays["targets"], ds.meta["vocab"]
    assert x.shape[1] == 32 and ds.meta["stride"] == 8
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are the next characters
    assert vocab.decode(x[0]) == tiny_text_corpus()[:32]
    assert len(ds) == (len(tiny_text_corpus()) - 33) // 8 + 1


def test_tiny_text_window_from_hyper_parameter_or_fixed_shape():
    class Program:
        train_graph = lm()
        hparams = {"ctx": 16}

    assert load_dataset("tiny_text", Program()).arrays["tokens"].shape[1] == 16
    assert load_dataset("tiny_text", lm(seq=24, label_shape=(B, 24))).meta["seq"] == 24


def test_tiny_text_words_for_a_next_word_model():
    capped = load_dataset("tiny_text:level=word,seq=5", lm(vocab=200, label_shape=(B,)))
    assert len(capped.meta["vocab"]) == 200  # the most frequent words that fit the model
    ds = load_dataset("tiny_text:level=word,seq=5", lm(vocab=2000, label_shape=(B,)))
    vocab = ds.meta["vocab"]
    assert len(vocab) < 2000 and vocab.tokens[0] == "<unk>" and "\n" in vocab
    assert ds.arrays["targets"].shape == (len(ds),)
    assert vocab.decode(ds.arrays["tokens"][0]) == "humpty dumpty sat on a"
    assert vocab.tokens[ds.arrays["targets"][0]] == "wall"


def test_tiny_text_reuses_a_checkpoint_vocabulary():
    first = load_dataset("tiny_text:seq=8", lm())
    saved = first.meta["vocab"].to_json()
    again = load_dataset("tiny_text:seq=8", lm(), vocab=saved)
    assert again.meta["vocab"] == first.meta["vocab"]
    np.testing.assert_array_equal(again.arrays["tokens"], first.arrays["tokens"])
    # digits ignores a vocabulary
    assert len(load_dataset("digits", image_model((N, 64)), vocab=saved)) == 1797


def test_tiny_text_vocabulary_larger_than_the_model():
    with pytest.raises(DataError) as e:
        load_dataset("tiny_text:seq=8", lm(vocab=40))
    assert e.value.message == (
        "tiny_text: the text has 60 distinct characters but input `tokens` indexes an "
        "embedding table of 40 rows"
    )
    assert e.value.hint.startswith("raise the model's vocabulary size to at least 60")


def test_builtin_needs_one_input():
    specs = image_model((N, 64)) + [InputSpec("z", "input", TensorType((N,), "f32"))]
    with pytest.raises(DataError) as e:
        load_dataset("digits", specs)
    assert e.value.message == (
        "digits: the built-in dataset fills one input and one label; the model has "
        "input `x`: f32[N, 64], label `y`: i64[N], input `z`: f32[N]"
    )
