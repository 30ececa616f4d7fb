"""Maintenance scripts that regenerate the docs' tutorial pictures and check notebook outputs; not part of the package."""
