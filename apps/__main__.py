"""``python -m apps``: the same as the ``seal`` console script."""

from apps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
