"""Small synthetic corpora for the corpus tests (seeded, a few hundred KB at most)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do", "fe", "gi", "ho"]


def lexicon(n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng([seed, 7])
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(_SYLLABLES, size=rng.integers(1, 4))))
    return sorted(words)


def documents(n: int, seed: int = 0, words: tuple[int, int] = (120, 240)) -> list[str]:
    """n distinct documents of Zipf-distributed words, with sentences and paragraphs."""
    lex = lexicon(seed=seed)
    p = 1.0 / np.arange(1, len(lex) + 1) ** 1.1
    p /= p.sum()
    rng = np.random.default_rng([seed, 11])
    out = []
    for i in range(n):
        ws = list(rng.choice(lex, size=int(rng.integers(*words)), p=p))
        text, line = [], []
        for j, w in enumerate(ws):
            line.append(w)
            if j % 12 == 11:
                text.append(" ".join(line).capitalize() + ".")
                line = []
            if j % 60 == 59:
                text.append("\n")
        text.append(" ".join(line) + f" doc{i}.")
        out.append(" ".join(text).replace(" \n ", "\n\n") + "\n")
    return out


def near_copy(doc: str, seed: int = 0) -> str:
    """The document with one word replaced (a near duplicate: ~95% of its 5-gram shingles kept)."""
    words = doc.split(" ")
    i = len(words) // 2
    words[i] = "zzyzx" + str(seed)
    return " ".join(words)


def write_tree(root: Path, docs: list[str], suffixes=(".txt", ".md", ".py")) -> Path:
    """One file per document in a few nested folders."""
    for i, d in enumerate(docs):
        sub = root / f"part{i % 3}" / (f"sub{i % 2}" if i % 5 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc{i:04d}{suffixes[i % len(suffixes)]}").write_text(d)
    return root
