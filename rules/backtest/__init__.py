"""Backtest: replay stored readings through the live engines (see ``replay``)."""
