"""Reporting: each table as Markdown, LaTeX, CSV and a figure, from its plan file and the
result files of its runs (no tracking store). Imports plan and the layers below it."""
