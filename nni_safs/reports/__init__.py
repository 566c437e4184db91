"""What a run leaves for people: summary.json and results.md, plots, the exported network, the report
page of one run and the comparison of several."""
