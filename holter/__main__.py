"""``python -m holter`` runs the command-line interface."""

from holter.cli.main import main

if __name__ == "__main__":
    main()
