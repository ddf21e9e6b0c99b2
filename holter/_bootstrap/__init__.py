"""The directory ``holter run`` puts first on the program's PYTHONPATH (it holds sitecustomize)."""
