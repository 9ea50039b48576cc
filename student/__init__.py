"""The student: applies self-edits to its local model as LoRA adapters and answers questions."""
