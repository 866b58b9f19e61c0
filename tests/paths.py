"""Where tests find the shared corpus: $SHAZIP_CORPUS, else ../shared/corpus beside the checkout.

The corpus is read in place, never copied into the repository (see its README)."""

from __future__ import annotations

import os
from pathlib import Path

CORPUS = Path(os.environ.get("SHAZIP_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
VALID_TEXT = CORPUS / "valid" / "enwiki2015_plain_heldout.txt"
