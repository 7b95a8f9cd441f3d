"""The Jinja2 templates of the HTML report, installed as lossreport.report_templates."""
