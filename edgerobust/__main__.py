"""``python -m edgerobust``: the same command line as the ``edgerobust`` console script, for
environments where the script is not on the PATH (a ``--target`` install, a container)."""

from edgerobust.cli import main

if __name__ == "__main__":
    main()
