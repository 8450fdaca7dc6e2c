"""Command line of `hf_unlearn.tasks.tofu.matched_forgetting` (its docstring says what it measures).

Run from the repository root: its default outputs are relative paths.
"""

from hf_unlearn.tasks.tofu.matched_forgetting import main

if __name__ == "__main__":
    main()
