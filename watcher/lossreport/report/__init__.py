"""The renderer: a run's losses to charts, a CSV, a summary and pages.

render.py renders one run (read through sources/) into its `loss_graphs/`; history.py, stats.py
and downsample.py shape and summarise the losses; charts.py, theme.py and vega.py draw them;
outputs.py names and writes the files; pages.py makes the HTML (report, runs index, mail body);
graphs.py is the feature document's `LossGraphGenerator` over the same pieces.

Nothing is imported here: a chart-drawing helper process imports vega.py alone.
"""
