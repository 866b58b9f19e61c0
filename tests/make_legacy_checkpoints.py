"""Write tests/data/legacy_tiny_step{10,20}.pt: checkpoints made by the training code *before* issue 17.

They were made with this script at commit 3254906 (the issue-17 branch's base), and must not be remade
with later code: `tests/test_training_compat.py` resumes the step-10 checkpoint with the current code and
requires the step-20 one bit for bit, which is what keeps older runs (e.g. the default model's long CPU run)
resumable.

    python tests/make_legacy_checkpoints.py OUT_DIR     # (at commit 3254906) then copy OUT_DIR/{a,b}/...
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_training import synthetic_text  # noqa: E402
from training.train import main  # noqa: E402

CORPUS_SIZE, CORPUS_SEED = 60_000, 11
# The settings both runs used (also what the compatibility test passes on resume).
COMMON = ["--config", "tiny", "--quiet", "--valid-bytes", "3000"]
COMMON += ["--set", "threads=1", "--set", "batch=2", "--set", "bptt=16", "--set", "d_model=16"]
COMMON += ["--set", "d_boom=64", "--set", "memory=8", "--set", "dropout=0.1", "--set", "eval_steps=5"]
COMMON += ["--set", "checkpoint_steps=0", "--set", "log_steps=5"]

if __name__ == "__main__":
    out = Path(sys.argv[1])
    corpus = out / "corpus.txt"
    corpus.write_bytes(synthetic_text(CORPUS_SIZE, CORPUS_SEED))
    assert main(COMMON + ["--data", str(corpus), "--out", str(out / "a"), "--max-steps", "10"]) == 0
    assert main(COMMON + ["--data", str(corpus), "--out", str(out / "b"), "--max-steps", "20"]) == 0
