"""The owner's numbers: the funnel report and its rollups, the campaigns' effect, one
lead's history, the morning digest, export, and report periods."""
