"""The teacher: proposes self-edits for contexts and drives the outer loop."""
