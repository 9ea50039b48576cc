"""The auditor: holds τ and the retention set, judges candidates, records every verdict."""
