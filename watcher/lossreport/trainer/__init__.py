"""The trainer side: `start_run` and the `Run` it returns (tracker.py), the background thread
that writes its shards (flusher.py), and the checks on what `Run.log` is given (values.py)."""
