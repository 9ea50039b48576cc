"""``python -m seal``: the same as the ``seal`` console script."""

from seal.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
