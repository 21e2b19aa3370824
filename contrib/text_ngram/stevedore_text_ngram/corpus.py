"""The shipped text and how both models cut it into words: shared by ``train.py`` and the predictors, so a prompt
is read as the training text was."""

from __future__ import annotations

import re
from pathlib import Path

#: The public-domain text both models are fitted on (see its header).
TEXT = Path(__file__).resolve().parent / "data" / "shakespeare.txt"
#: What is no word for the language model's context: a word is looked up by its letters, digits and apostrophes.
NOT_KEY = re.compile(r"[^\w']+")
#: scikit-learn's default ``token_pattern``: the embedding's terms, two word characters or more.
TERM = re.compile(r"(?u)\b\w\w+\b")


def speeches(path: Path = TEXT) -> list[str]:
    """The speeches of the text, each without its speaker's line, its lines joined by spaces."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("# ")]
    blocks = "\n".join(lines).strip().split("\n\n")
    return [" ".join(block.splitlines()[1:]) for block in blocks if "\n" in block]


def words(text: str) -> list[str]:
    """The words of ``text`` as the language model writes them: split on white space, punctuation kept."""
    return text.split()


def key(word: str) -> str:
    """What the language model looks a word up by: lower case, without punctuation around it ("Speak," and
    "speak" are one key); a word of punctuation alone ("--") is its own key."""
    stripped = NOT_KEY.sub("", word.lower()).strip("'")
    return stripped or word


def terms(text: str) -> list[str]:
    """The embedding's terms of ``text``, as scikit-learn's ``TfidfVectorizer`` finds them by default."""
    return TERM.findall(text.lower())
