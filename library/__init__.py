"""seal's shared library, below the roles: models, LoRA, training, datasets, prompts, ledger, hashing."""
