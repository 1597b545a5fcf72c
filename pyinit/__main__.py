"""``python -m pyinit``: the same as the ``pyinit`` console script."""

from pyinit.cli import main

if __name__ == "__main__":
    main()
