"""The `lossreport` command (main.py), its `--config` file (config.py), the progress of a batch
render (progress.py) and `lossreport demo` (demo.py)."""
