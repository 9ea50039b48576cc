"""Where the tests find the read-only shared data: beside the checkout, as in CI (never copied in)."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SQUAD_DEV = SHARED_DATA / "squad" / "squad_dev.json"
SQUAD_TRAIN_SELF_EDITS = SHARED_DATA / "squad" / "squad_train100_qwen7b_selfedits.json"
ARC_DIR = SHARED_DATA / "arc"
CURATED_TRAINING = ARC_DIR / "arc-agi_training_challenges_filtered_1B_training_set.json"
"""The paper's 12 curated training tasks (self-edit generation and ReST^EM)."""
CURATED_EVALUATION = ARC_DIR / "arc-agi_evaluation_challenges_filtered_1B_eval_set.json"
"""The paper's 10 curated evaluation tasks."""
