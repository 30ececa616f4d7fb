"""Widgets in a real browser: JupyterLab and Voila driven by Chromium."""
