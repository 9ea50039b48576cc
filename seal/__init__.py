"""seal: self-adapting language models with a teacher, a student and an independent auditor."""
