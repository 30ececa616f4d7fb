"""Widgets from their Python side: app, canvas, controls, inspector, menus."""
