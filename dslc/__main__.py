"""`python -m dslc`: the same as the `dslc` command."""

from dslc.cli import main

if __name__ == "__main__":
    main()
