"""Run logs to summaries and reports: reading, summarising, HTML, importers of other tools' logs."""
