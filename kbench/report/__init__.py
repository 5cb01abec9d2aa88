"""The comparison report of a run: `report.html` (self-contained, inline SVG plots),
`report.md`, `results.csv` and `results.json`.

    gather.py    every pair's records read (concurrently) and turned into one plain results dict
    compare.py   each dataset's comparison: best against best, on equal footing, with intervals
    render.py    the results dict as HTML, Markdown, CSV and JSON (every file from the same dict,
                 so they never disagree)
    charts.py    the inline SVG line charts
    published.py the study's published table and CLIP's published zero-shot numbers

The study's table is top-1 accuracy on every dataset, so the per-epoch table, the curves and
the overall count are top-1; each dataset's literature metric (mean per class, worst region,
macro-F1) is compared beside it. Pairs still running, failed or without records keep their
place and are marked.
"""
