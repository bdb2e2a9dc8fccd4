"""Views of the results table (pandas, no torch): verdicts and summaries, the leaderboard, its renderers, the
regression check, figures and W&B logging."""

from bench.reporting.aggregate import invariance_verdicts, randomization_summary
from bench.reporting.check import compare
from bench.reporting.leaderboard import build_leaderboard, load_leaderboard
from bench.reporting.render import to_html, to_markdown, write_leaderboard

__all__ = ["build_leaderboard", "compare", "invariance_verdicts", "load_leaderboard", "randomization_summary",
           "to_html", "to_markdown", "write_leaderboard"]
