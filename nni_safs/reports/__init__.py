"""What a run leaves for people: summary.json and results.md, plots, and the exported network."""
