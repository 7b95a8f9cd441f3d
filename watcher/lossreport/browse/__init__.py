"""What `lossreport serve` shows beyond the report files: the runs index over the catalog,
sweeps, and a run's zoomable charts. Each view takes checked query parameters and gives an
`Answer`; delivery/serve.py is the HTTP server that routes to them."""
