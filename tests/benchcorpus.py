"""What llama-benchy needs besides the endpoint, without the network: a whitespace tokenizer
(the vLLM stand-in counts prompt tokens as words, so the sizes llama-benchy asks for are the
sizes the stand-in processes) and a book to cut prompts from, served on loopback."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "holmes",
         "and", "watson", "walk", "down", "baker", "street", "at", "night", "in", "london", "fog"]


@dataclass(frozen=True)
class Corpus:
    tokenizer: Path
    book_url: str

    def args(self) -> list[str]:
        """bench options for it (and --skip-coherence: no stand-in answers "Paris")."""
        return ["--tokenizer", str(self.tokenizer), "--book-url", self.book_url,
                "--skip-coherence"]


@contextlib.contextmanager
def serve_corpus(root: Path) -> Iterator[Corpus]:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.save(str(root / "tokenizer.json"))
    rng = random.Random(18)
    (root / "book.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(50000)))
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Corpus(root / "tokenizer.json", f"http://127.0.0.1:{server.server_address[1]}/book.txt")
    finally:
        server.shutdown()
        server.server_close()
