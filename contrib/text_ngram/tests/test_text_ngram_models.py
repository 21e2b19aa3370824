"""The two models against their real artifacts, schemas and fixtures: the methods the server calls, called here."""

from __future__ import annotations

import importlib.util
import time
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
from stevedore_text_ngram import corpus
from stevedore_text_ngram.predictor import NgramEmbed, NgramLM, predictors

from stevedore_server import Generation
from stevedore_server.base.errors import BadRequest
from stevedore_server.base.validation import SchemaValidator
from stevedore_server.predictor import Predictor
from stevedore_server.testing import self_test

#: The plugin's source folder: its pyproject.toml and train.py.
SOURCE = Path(__file__).resolve().parents[1]
#: The text's first words ("First Citizen: Before we proceed any further, hear me speak."): the greedy
#: continuation of their start is the text's own next word.
OPENING = "Before we proceed any"


@pytest.fixture(scope="module")
def lm() -> NgramLM:
    model = NgramLM()
    model.load()
    return model


@pytest.fixture(scope="module")
def embedder() -> NgramEmbed:
    model = NgramEmbed()
    model.load()
    return model


def pieces(result: Any) -> list[Generation]:
    listed = list(result)
    assert all(isinstance(piece, Generation) for piece in listed)
    return listed


def text(result: Any) -> str:
    return "".join(piece.text for piece in pieces(result))


# -- both ------------------------------------------------------------------------


@pytest.mark.parametrize("predictor", predictors(), ids=lambda predictor: predictor.name)
def test_the_server_would_serve_it(predictor: Predictor) -> None:
    assert self_test(predictor).ready


def test_the_entry_point_gives_both_models_with_their_capabilities() -> None:
    project = tomllib.loads((SOURCE / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["stevedore.predictors"] == {
        "text": "stevedore_text_ngram.predictor:predictors"
    }
    served = {predictor.name: predictor.text_capabilities for predictor in predictors()}
    assert served == {"ngram-lm": frozenset({"chat", "complete"}), "ngram-embed": frozenset({"embed"})}


@pytest.mark.parametrize("artifact", ["ngram-lm.npz", "ngram-embed.npz"])
def test_artifacts_hold_no_python_objects(artifact: str) -> None:
    with np.load(NgramLM().resource_path(artifact), allow_pickle=False) as arrays:
        assert {arrays[name].dtype.kind for name in arrays.files} <= {"U", "i", "f"}


def retrained() -> ModuleType:
    spec = importlib.util.spec_from_file_location("text_ngram_train", SOURCE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_artifacts_are_what_train_py_makes() -> None:
    """A change to the text or to how it is cut into words that was not followed by ``python train.py`` fails."""
    train = retrained()
    for artifact, arrays in (("ngram-lm.npz", train.language_model()), ("ngram-embed.npz", train.embedding())):
        with np.load(NgramLM().resource_path(artifact), allow_pickle=False) as shipped:
            assert sorted(shipped.files) == sorted(arrays)
            for name in shipped.files:
                if name == "components":  # an SVD's vectors are known up to their sign
                    signs = np.sign(np.sum(shipped[name] * arrays[name], axis=1, keepdims=True))
                    np.testing.assert_allclose(shipped[name], arrays[name] * signs, atol=1e-4)
                else:
                    np.testing.assert_array_equal(shipped[name], arrays[name])


def test_the_text_is_the_public_domain_one_it_says() -> None:
    header = [line for line in corpus.TEXT.read_text().splitlines() if line.startswith("# ")]
    assert "public domain" in " ".join(header)
    speeches = corpus.speeches()
    assert speeches[0] == "Before we proceed any further, hear me speak."
    assert len(speeches) > 2000


# -- ngram-lm ----------------------------------------------------------------------


def test_greedy_continuation_is_the_text_s_own_next_word(lm: NgramLM) -> None:
    assert text(lm.complete(OPENING, {"max_tokens": 1, "temperature": 0})) == " further,"


@pytest.mark.parametrize("prompt", [OPENING, "My lord, the king", "Hello there, how are you?", ""])
def test_continues_with_words_of_the_text(lm: NgramLM, prompt: str) -> None:
    known = {word for speech in corpus.speeches() for word in corpus.words(speech)}
    generated = pieces(lm.complete(prompt, {"max_tokens": 40, "seed": 3}))
    assert len(generated) == 40
    assert all(piece.text.startswith(" ") and piece.text[1:] in known for piece in generated)


def test_pieces_count_the_tokens_and_say_why_they_end(lm: NgramLM) -> None:
    generated = pieces(lm.complete("Speak, speak.", {"max_tokens": 7}))
    assert [piece.completion_tokens for piece in generated] == [1, 2, 3, 4, 5, 6, 7]
    assert {piece.prompt_tokens for piece in generated} == {2}
    assert [piece.finish_reason for piece in generated] == [None] * 6 + ["length"]


def test_default_max_tokens(lm: NgramLM) -> None:
    assert len(pieces(lm.complete(OPENING, {}))) == 64


def test_no_tokens(lm: NgramLM) -> None:
    assert pieces(lm.complete(OPENING, {"max_tokens": 0})) == [Generation("", 3 + 1, 0, "length")]


def test_the_same_seed_gives_the_same_text(lm: NgramLM) -> None:
    params = {"max_tokens": 50, "seed": 42, "temperature": 0.9, "top_p": 0.95}
    first = text(lm.complete("The people", params))
    assert text(lm.complete("The people", params)) == first
    assert len({text(lm.complete("The people", {**params, "seed": seed})) for seed in range(5)}) > 1


def test_without_temperature_it_samples(lm: NgramLM) -> None:
    assert text(lm.complete("The people", {"max_tokens": 60})) != text(lm.complete("The people", {"max_tokens": 60}))


def test_temperature_zero_is_greedy(lm: NgramLM) -> None:
    greedy = text(lm.complete("The people", {"max_tokens": 30, "temperature": 0}))
    assert text(lm.complete("The people", {"max_tokens": 30, "temperature": 0, "seed": 9})) == greedy
    # The tiniest nucleus keeps the most likely word alone, whatever the draw.
    assert text(lm.complete("The people", {"max_tokens": 30, "top_p": 1e-9, "seed": 9})) == greedy


def test_a_low_temperature_stays_nearer_greedy(lm: NgramLM) -> None:
    greedy = corpus.words(text(lm.complete("The people", {"max_tokens": 200, "temperature": 0})))

    def agreement(temperature: float) -> float:
        words = [
            corpus.words(text(lm.complete("The people", {"max_tokens": 200, "temperature": temperature, "seed": s})))
            for s in range(5)
        ]
        return float(np.mean([sum(a == b for a, b in zip(w, greedy, strict=True)) for w in words]))

    assert agreement(0.05) > agreement(1.5)


def test_stop_cuts_before_the_stop_sequence(lm: NgramLM) -> None:
    params: dict[str, Any] = {"max_tokens": 30, "temperature": 0}
    whole = text(lm.complete("The people", params))
    words = corpus.words(whole)
    # A stop sequence over two words: the end of the 5th, the space, the start of the 6th.
    stop = words[4][-2:] + " " + words[5][:2]
    generated = pieces(lm.complete("The people", {**params, "stop": [stop, "never in the text"]}))
    assert "".join(piece.text for piece in generated) == whole[: whole.index(stop)]
    assert generated[-1].finish_reason == "stop"
    assert not any(stop in piece.text for piece in generated)
    assert text(lm.complete("The people", {**params, "stop": "never in the text"})) == whole


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": -1},
        {"max_tokens": "8"},
        {"max_tokens": True},
        {"temperature": 2.5},
        {"temperature": "hot"},
        {"top_p": 0},
        {"top_p": 1.5},
        {"seed": -1},
        {"seed": 1.5},
        {"stop": 5},
        {"stop": ["a", 5]},
    ],
    ids=repr,
)
def test_bad_parameters_are_refused_when_called(lm: NgramLM, params: dict[str, Any]) -> None:
    # Refused by the call itself, before the server streams anything.
    with pytest.raises(BadRequest, match=next(iter(params))):
        lm.complete(OPENING, params)
    with pytest.raises(BadRequest, match=next(iter(params))):
        lm.chat([{"role": "user", "content": OPENING}], params)


def test_chat_continues_the_last_user_message(lm: NgramLM) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a citizen of Rome."},
        {"role": "user", "content": "Who is the enemy?"},
        {"role": "assistant", "content": "Caius Marcius."},
        {"role": "user", "content": [{"type": "text", "text": "Before we"}, {"type": "text", "text": "proceed any"}]},
    ]
    generated = pieces(lm.chat(messages, {"max_tokens": 5, "temperature": 0}))
    assert "".join(piece.text for piece in generated) == text(lm.complete(OPENING, {"max_tokens": 5, "temperature": 0}))
    assert generated[-1].prompt_tokens == 6 + 4 + 2 + 4


def test_generation_is_fast(lm: NgramLM) -> None:
    """The benchmark streams it: the model must be far from the bottleneck (thousands of words a second)."""
    started = time.perf_counter()
    assert len(pieces(lm.complete("The people", {"max_tokens": 20_000, "seed": 1}))) == 20_000
    assert time.perf_counter() - started < 2.0


def test_predict_is_greedy_unless_an_item_says(lm: NgramLM) -> None:
    greedy = text(lm.complete(OPENING, {"max_tokens": 32, "temperature": 0})).lstrip()
    sampled = text(lm.complete(OPENING, {"max_tokens": 5, "temperature": 1.2, "seed": 4})).lstrip()
    item = {"prompt": OPENING, "max_tokens": 5, "temperature": 1.2, "seed": 4}
    assert lm.predict([OPENING, item]) == [greedy, sampled]


def validator(predictor: Predictor, kind: str) -> SchemaValidator:
    schema = predictor.resolved_schema(kind)
    assert schema is not None
    return SchemaValidator(schema)


@pytest.mark.parametrize(
    "payload",
    [[], "a prompt", [5], [{"max_tokens": 3}], [{"prompt": "a", "n": 2}], [{"prompt": "a", "temperature": 3}]],
    ids=["no prompt", "a string", "a number", "no prompt in an object", "an unknown key", "too hot"],
)
def test_lm_predict_schema_rejects(payload: Any) -> None:
    assert not validator(NgramLM(), "predict").is_valid(payload)


# -- ngram-embed -------------------------------------------------------------------


def cosine(embedder: NgramEmbed, first: str, second: str) -> float:
    vectors = embedder.embed([first, second], {})
    return float(vectors[0] @ vectors[1])


@pytest.mark.parametrize(
    ("text", "near", "far"),
    [
        ("the king and his crown", "the queen upon her royal throne", "bread and corn for the hungry citizens"),
        ("bread and corn for the hungry citizens", "famine and hunger of the poor people", "war and battle"),
        ("war and battle with swords", "the soldiers fight in the field", "the queen upon her royal throne"),
    ],
)
def test_texts_close_in_meaning_embed_closer(embedder: NgramEmbed, text: str, near: str, far: str) -> None:
    assert cosine(embedder, text, near) > cosine(embedder, text, far) + 0.2


def test_vectors_are_unit_length_and_of_a_fixed_size(embedder: NgramEmbed) -> None:
    vectors = embedder.embed(["The king is dead", "O Rome!", "zzz qqq, xyzzy!"], {})
    assert vectors.shape == (3, 64)
    assert np.isfinite(vectors).all()
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 0.0])


def test_a_batch_embeds_as_its_texts_alone(embedder: NgramEmbed) -> None:
    """The batcher merges requests into one call: each text's vector must not depend on its neighbours."""
    texts = ["the king and his crown", "bread and corn", "war"]
    together = embedder.embed(texts, {})
    alone = np.concatenate([embedder.embed([one], {}) for one in texts])
    np.testing.assert_allclose(together, alone)
    assert embedder.embed([], {}).shape == (0, 64)


def test_dimensions_keep_the_first_components(embedder: NgramEmbed) -> None:
    full = embedder.embed(["the king and his crown"], {})[0]
    short = embedder.embed(["the king and his crown"], {"dimensions": 8})[0]
    assert short.shape == (8,)
    np.testing.assert_allclose(short, full[:8] / np.linalg.norm(full[:8]))
    assert embedder.embed(["war"], {"dimensions": 64}).shape == (1, 64)


@pytest.mark.parametrize("dimensions", [0, 65, 1.5, "8", True])
def test_dimensions_it_cannot_give_are_refused(embedder: NgramEmbed, dimensions: Any) -> None:
    with pytest.raises(BadRequest, match="dimensions must be an integer from 1 to 64"):
        embedder.embed(["war"], {"dimensions": dimensions})


def test_embed_predict_gives_the_embeddings(embedder: NgramEmbed) -> None:
    texts = ["the king and his crown", "war"]
    np.testing.assert_allclose(embedder.predict(texts), embedder.embed(texts, {}))
    assert validator(embedder, "output").is_valid(embedder.predict(texts).tolist())
    assert not validator(embedder, "predict").is_valid([])
    assert not validator(embedder, "predict").is_valid([["nested"]])


# -- served in this process, over loopback (the kit's stevedore_serve) ------------------------------------


def test_predict_routes_answer(stevedore_serve: Any) -> None:
    client: httpx.Client = stevedore_serve(NgramLM(), NgramEmbed())
    answer = client.post("/models/ngram-lm/predict", json=[OPENING])
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0].startswith("further,")
    answer = client.post("/models/ngram-embed/predict", json=["the king", "the queen", "corn"])
    assert answer.status_code == 200, answer.text
    vectors = np.array(answer.json()["predictions"])
    assert vectors.shape == (3, 64)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    refused = client.post("/models/ngram-lm/predict", json=[{"prompt": "a", "temperature": 9}])
    assert refused.status_code == 422, refused.text
