"""Runs -> tables: leaderboards (CSV, Markdown, PNG) and the one Markdown table writer."""
