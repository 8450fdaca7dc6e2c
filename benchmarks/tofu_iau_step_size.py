"""Command line of `hf_unlearn.tasks.tofu.iau_step_size` (its docstring says what it measures).

Run from the repository root: its default outputs are relative paths.
"""

from hf_unlearn.tasks.tofu.iau_step_size import main

if __name__ == "__main__":
    main()
