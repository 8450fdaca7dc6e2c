"""Runtime services shared by the benchmark tasks and the CLI: processes, the stage cache, hashing, atomic files.

Nothing in the library core (`trainers`, `influence`, `data`, `evaluation`, `models`) imports this package; see
`docs/architecture.md`.
"""
