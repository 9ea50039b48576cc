"""seal's applications, above the roles: the CLI, the launchers, the benches and their reports."""
