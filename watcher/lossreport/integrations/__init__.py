"""Integrations with training libraries; each needs its library (an extra of lossreport)."""
