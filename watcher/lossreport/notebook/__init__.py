"""Runs in Jupyter: `lossreport.open(path)` gives a view of any run (opening.py) whose notebook
display is the report's summary and interactive charts, drawn offline (view.py, embed.py)."""
